"""Steering on the real embedded SmolLM2 + shipped SAE: KL-targeted strength search, clean and steered
greedy continuations, neuron and MLP-output sites, and the failure modes (NaN, unreachable targets)."""

import copy
import re

import pytest
import torch

from autointerp.engine.activations.coders import NeuronCoder
from autointerp.engine.activations.setup import prepare
from autointerp.engine.activations.steering import Steerer, SteeringError, SteeringSite, steering_site
from autointerp.engine.config import CacheConfig

TEXT = (
    "The village sat at the edge of a wide river, and every morning the fishermen pushed their boats into the "
    "cold water before the sun rose over the hills. Her grandmother kept a small garden behind the house, where "
    "she grew tomatoes, beans and a few roses that she cut for the kitchen table every Sunday. The committee met "
    "on Tuesday to discuss the new budget, but after three hours of arguments nobody could agree on how much "
    "money the library should receive. When the train finally arrived, the passengers rushed onto the platform, "
    "carrying suitcases, umbrellas and bags of food for the long journey to the north."
)
LATENTS = (3, 1000)
TARGETS = (0.25, 1.0, 4.0)


@pytest.fixture(scope="module")
def parts(subject_model):
    # One torch thread: on a 2-core machine shared with other jobs, two spinning OpenMP threads made
    # forward passes 10-20x slower (0.5 s -> 10 s); one thread stays near 0.6 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield prepare(CacheConfig(device="cpu", dtype="float32"), model=subject_model)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts(parts):
    """Three 32-token spans of ordinary English, each starting with the model's start token."""
    model = parts.model
    ids = model.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    spans = [[model.start_id] + ids[i * 31 : (i + 1) * 31] for i in range(3)]
    assert all(len(s) == 32 for s in spans)
    return torch.tensor(spans, dtype=torch.int64)


@pytest.fixture(scope="module")
def steerers(parts):
    """One steerer per latent for the whole module, so the clean pass is shared by every target."""
    return {lat: Steerer(parts.model, steering_site(parts.coder, parts.hook, lat)) for lat in LATENTS}


@pytest.fixture(scope="module")
def clean_continuation(parts, prompts):
    return greedy(parts.model.bridge, prompts, 8)


def greedy(bridge, prompts, n_new):
    tokens = prompts
    with torch.inference_mode():
        for _ in range(n_new):
            tokens = torch.cat([tokens, bridge(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, prompts.shape[1] :]


def plain_logprobs(bridge, prompts):
    with torch.inference_mode():
        return bridge(prompts)[:, -1].double().log_softmax(-1)


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("target", TARGETS)
def test_search_reaches_kl_target(steerers, prompts, latent, target):
    steerer = steerers[latent]
    found = steerer.find_strength(prompts, target, rel_tol=0.1, max_steps=40)
    assert found.error is None and found.strength is not None and found.strength > 0
    assert 0 <= found.steps <= 40  # 0: an earlier target's search already measured a strength that fits
    assert abs(found.kl - target) <= 0.1 * target
    # Recomputed, the strength gives the target.
    assert abs(steerer.kl(prompts, found.strength) - target) <= 0.1 * target


def test_zero_strength_is_the_clean_model(parts, steerers, prompts, clean_continuation):
    steerer, bridge = steerers[LATENTS[0]], parts.model.bridge
    assert torch.equal(steerer.generate(prompts, 0.0, 8), clean_continuation)
    clean = plain_logprobs(bridge, prompts)
    got = steerer.next_token_logprobs(prompts, 0.0)
    assert got.shape == (3, parts.model.vocab_size)
    assert torch.allclose(got, clean, atol=1e-6)
    assert steerer.kl(prompts, 0.0) == pytest.approx(0.0, abs=1e-9)
    # Steering leaves no hook behind: the plain model is unchanged afterwards.
    steerer.next_token_logprobs(prompts, 500.0)
    assert torch.equal(plain_logprobs(bridge, prompts), clean)


def test_steering_adds_the_direction_at_the_hook(parts, steerers, prompts):
    steerer, bridge = steerers[LATENTS[1]], parts.model.bridge
    strength = 120.0
    delta = strength * steerer.site.direction
    with torch.inference_mode(), bridge.hooks(fwd_hooks=[(parts.hook, lambda act, hook: act + delta)]):
        ref = bridge(prompts)[:, -1].double().log_softmax(-1)
    assert torch.allclose(steerer.next_token_logprobs(prompts, strength), ref, atol=1e-6)


def coder_reading(parts, latent, prompts, delta) -> float:
    """Mean activation of `latent`, as the coder reads the hook with `delta` added there (start token left out)."""
    grabbed = {}

    def add(act, hook):
        return act + delta

    def grab(act, hook):  # runs after `add` on the same hook point: sees the steered activation
        grabbed["x"] = act.detach().clone()

    with torch.inference_mode(), parts.model.bridge.hooks(fwd_hooks=[(parts.hook, add), (parts.hook, grab)]):
        parts.model.bridge(prompts)
    x = grabbed["x"][:, 1:].reshape(-1, grabbed["x"].shape[-1])
    acts = parts.coder.encode(x)
    return float(acts.values[acts.latents == latent].sum()) / x.shape[0]


def test_searched_strengths_move_the_next_token_and_the_latent_in_order(parts, steerers, prompts, clean_continuation):
    """In the regime the intervention scorer steers in (the strengths the KL search finds, not an arbitrary huge
    one): a larger KL target takes a larger strength and takes more probability from the clean model's next token;
    at 4 nats every prompt's next greedy token changes; and the coder reads the steered hook as its latent."""
    for latent, steerer in steerers.items():
        strengths = [steerer.find_strength(prompts, t, rel_tol=0.1, max_steps=40).strength for t in TARGETS]
        assert None not in strengths and strengths == sorted(set(strengths)), strengths  # strictly increasing
        clean = steerer.next_token_logprobs(prompts, 0.0)
        top = clean.argmax(-1, keepdim=True)
        lost = [
            float((clean.gather(1, top) - steerer.next_token_logprobs(prompts, s).gather(1, top)).mean())
            for s in strengths
        ]
        assert lost == sorted(lost) and lost[0] > 0 and lost[-1] > 1.0, (latent, lost)  # nats of log-probability
        steered = steerer.generate(prompts, strengths[-1], 8)
        assert steered.shape == clean_continuation.shape == (3, 8)
        assert (steered[:, 0] != clean_continuation[:, 0]).all(), (latent, steered[:, 0], clean_continuation[:, 0])
        assert torch.equal(steered[:, 0], steerer.next_token_logprobs(prompts, strengths[-1]).argmax(-1))
        # The coder reads the added direction as its latent, growing with the strength (measured: by ~0.65 per unit).
        read = [coder_reading(parts, latent, prompts, s * steerer.site.direction) for s in (0.0, *strengths)]
        assert read == sorted(read) and read[-1] - read[0] > 0.25 * strengths[-1], (latent, read)


def test_unreachable_target_is_reported(steerers, prompts):
    found = steerers[LATENTS[1]].find_strength(prompts, 1e6, max_steps=25)
    assert found.strength is None and found.kl is None
    assert found.steps <= 25
    assert re.match(r"KL target 1e\+06 unreachable: at most [\d.]+ at strength [\d.e+]+", found.error), found.error


def test_search_is_bounded_by_max_steps(steerers, prompts):
    found = steerers[LATENTS[1]].find_strength(prompts, 1.0, rel_tol=1e-12, max_steps=4)
    assert found.strength is None and found.steps <= 4
    assert "not reached in 4 forward passes" in found.error
    empty = steerers[LATENTS[1]].find_strength(prompts[:0], 1.0)
    assert empty.strength is None and empty.steps == 0 and empty.error == "no prompts to steer"
    assert steerers[LATENTS[1]].generate(prompts[:0], 10.0, 8).shape == (0, 8)


def test_bad_latents_and_nan_directions(parts, prompts):
    coder = parts.coder
    with pytest.raises(SteeringError, match="out of range"):
        steering_site(coder, parts.hook, coder.num_latents)
    with pytest.raises(SteeringError, match="out of range"):
        steering_site(coder, parts.hook, -1)
    broken = copy.copy(coder)
    broken.W_dec = coder.W_dec.clone()
    broken.W_dec[5, 17] = float("nan")
    with pytest.raises(SteeringError, match="non-finite"):
        steering_site(broken, parts.hook, 5)
    assert torch.isfinite(coder.W_dec[5]).all()  # the real coder is untouched
    # A NaN direction that reaches the steerer anyway: the KL is NaN, reported, not raised.
    direction = coder.W_dec[5].clone()
    direction[0] = float("nan")
    steerer = Steerer(parts.model, SteeringSite(parts.hook, direction))
    found = steerer.find_strength(prompts[:1], 1.0)
    assert found.strength is None and found.steps <= 40
    assert found.error.startswith("KL is nan at strength")


def test_transcoder_site_is_the_mlp_output(parts):
    fake = copy.copy(parts.coder)
    fake.transcoder = True
    site = steering_site(fake, "blocks.4.mlp.hook_in", 2)
    assert site.hook == "blocks.4.hook_mlp_out"
    assert torch.equal(site.direction, parts.coder.W_dec[2])
    with pytest.raises(SteeringError, match="hook_in"):
        steering_site(fake, "blocks.4.hook_resid_post", 2)


def test_neuron_site_is_one_hot_and_steers(parts, prompts):
    model, layer, neuron = parts.model, 5, 7
    hook = f"blocks.{layer}.mlp.hook_post"
    site = steering_site(NeuronCoder(model.d_mlp, hook, None), hook, neuron)
    assert site.hook == hook and site.direction.shape == (model.d_mlp,)
    assert site.direction[neuron] == 1 and site.direction.sum() == 1
    steerer = Steerer(model, site)
    few = prompts[:2]
    steered = steerer.next_token_logprobs(few, 30.0)
    assert (steered - plain_logprobs(model.bridge, few)).abs().max() > 1e-3
    # One unit of neuron i is the i-th column of the MLP's down projection at the MLP output.
    down = model.bridge.original_model.model.layers[layer].mlp.down_proj.weight[:, neuron].detach()
    at_out = Steerer(model, SteeringSite(f"blocks.{layer}.hook_mlp_out", down.float()))
    assert torch.allclose(at_out.next_token_logprobs(few, 30.0), steered, atol=1e-4)
