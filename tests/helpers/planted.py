"""A planted store: three latents, each firing on the sentences of one topic, made by the real store code from real
text tokenized by the embedded model's tokenizer (shared by the embedding and saebench planted tests)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from autointerp.engine.activations.model import load_tokenizer
from autointerp.engine.config import CacheConfig
from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.stats import compute_latent_stats

from .llm_stage import write_stand_in_explanation
from .stores import base_provenance

TOPICS = {
    "cats and kittens, pet felines": [
        "The cat curled up on the warm windowsill and purred softly.",
        "My kitten chased a ball of yarn under the sofa.",
        "Our old tabby cat sleeps most of the afternoon.",
        "The kitten meowed until we filled its food bowl.",
        "A stray cat climbed the fence and licked its paws.",
        "She adopted two kittens from the animal shelter.",
        "The cat knocked a glass off the kitchen table.",
        "Cats groom themselves for hours every day.",
        "The black cat stared at the birds in the garden.",
        "His kitten hid inside a cardboard box all morning.",
        "The cat scratched the new armchair to pieces.",
        "A fluffy Persian cat won the pet show.",
        "The kittens tumbled over each other while playing.",
        "Our cat brings mice to the back door.",
        "The vet checked the cat's teeth and claws.",
        "A ginger kitten fell asleep in the laundry basket.",
        "The cat purred loudly when we stroked its fur.",
        "Two cats hissed at each other across the yard.",
        "The kitten pounced on a moth by the lamp.",
        "Siamese cats are known for their loud voices.",
    ],
    "money, banks and stock markets": [
        "Shares fell sharply as investors sold bank stocks.",
        "The central bank raised interest rates again.",
        "Stock markets in Asia closed higher on Friday.",
        "The company's profits doubled in the last quarter.",
        "Bond yields rose after the inflation report.",
        "The bank cut its mortgage rates for new customers.",
        "Traders bought gold as the dollar weakened.",
        "The pension fund moved money into government bonds.",
        "Quarterly earnings beat analysts' forecasts.",
        "The stock exchange halted trading after the crash.",
        "Investors worry about rising corporate debt.",
        "The euro gained against the pound in early trading.",
        "Savings accounts now pay higher interest.",
        "The firm issued new shares to raise capital.",
        "Oil prices pushed the index to a record high.",
        "The bank reported losses on its loan book.",
        "Hedge funds bet against the struggling retailer.",
        "The budget deficit widened to four percent.",
        "Markets rallied after the rate decision.",
        "The credit rating agency downgraded the bank.",
    ],
    "football matches and goals": [
        "The striker scored twice in the second half.",
        "The match ended in a goalless draw at home.",
        "The goalkeeper saved a penalty in the final minute.",
        "The team won the league after a late goal.",
        "The referee showed a red card to the defender.",
        "Fans celebrated the cup final victory all night.",
        "The midfielder signed a new contract with the club.",
        "A header from a corner won the game.",
        "The coach praised his players after the derby.",
        "The winger crossed the ball for an easy goal.",
        "The club sacked its manager after five defeats.",
        "The captain lifted the trophy at the stadium.",
        "An own goal gave the visitors the lead.",
        "The team was relegated after losing on the final day.",
        "The forward missed an open goal from close range.",
        "Supporters sang throughout the away match.",
        "The defender cleared the ball off the line.",
        "The league leaders drew with the bottom side.",
        "The substitute scored with his first touch.",
        "Extra time ended without a goal, so penalties followed.",
    ],
}
SEQ = 32


def build_planted_store(folder: Path) -> Path:
    """Three latents over real tokenized sentences: latent k fires on every token of a topic-k sentence (values
    0.5-5), and its stand-in explanation is topic k's name."""
    tok = load_tokenizer("embedded")
    sentences = [(k, s) for k, ss in enumerate(TOPICS.values()) for s in ss]
    rng = np.random.default_rng(0)
    rng.shuffle(sentences)
    seqs = np.full((len(sentences), SEQ), tok.eos_token_id, dtype=np.int64)
    lat, off, val = [], [], []
    for i, (k, s) in enumerate(sentences):
        ids = tok(s, add_special_tokens=False)["input_ids"][: SEQ - 1]
        seqs[i, 0] = 1
        seqs[i, 1 : 1 + len(ids)] = ids
        for pos in range(1, 1 + len(ids)):  # latent k fires on every token of a topic-k sentence
            lat.append(k), off.append(i * SEQ + pos), val.append(rng.uniform(0.5, 5.0))
    order = np.lexsort((off, lat))
    cache_cfg = dataclasses.asdict(CacheConfig(model="embedded", seq_len=SEQ, window_len=SEQ))
    path = folder / "planted.db"
    store = ActivationStore.open(path, create=True)
    store.claim(
        base_provenance(
            seq_len=SEQ,
            num_latents=3,
            chunk_seqs=len(sentences),
            vocab_size=49152,
            config=cache_cfg,
            n_tokens_target=SEQ * len(sentences),
        )
    )
    store.write_chunk(
        ChunkInfo(0, 0, len(sentences), len(sentences) * (SEQ - 1), len(lat)),
        seqs,
        np.array(lat, np.int32)[order],
        np.array(off, np.uint16)[order],
        np.array(val, np.float16)[order],
        0.0,
    )
    compute_latent_stats(store, SEQ)
    for k, text in enumerate(TOPICS):
        write_stand_in_explanation(store.results, k, text)
    store.close()
    return path
