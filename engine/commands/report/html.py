"""`autointerp report --html FILE --png DIR`: the report's figures (figures.py) written as one self-contained HTML
file and/or as PNG files.

The HTML file holds the text report (rendered by rich with inline styles) and every figure as a base64 PNG data
URI: no external src or href, so it opens offline and can be mailed as it is. Both outputs are checked before any
work and written whole or not at all: through a temporary file (or folder) beside the target, renamed into place
once everything is written.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from autointerp.store.db import ActivationStore, why_not_creatable
from autointerp.store.errors import UserError
from autointerp.store.text import printable

from .figures import FIGURES, Drawn, RunData, draw_all, png_bytes


class PictureError(UserError):
    """An output the figures cannot be written to, or a database with nothing to draw; one line."""


def check_html_path(path: str | os.PathLike) -> Path:
    """Where --html writes, refused in one line before any work when it cannot be (missing folders are made)."""
    out = Path(path).expanduser()
    if str(path).endswith(("/", os.sep)) or out.is_dir():
        raise PictureError(f"--html {out} is a folder; name the HTML file to write")
    why = why_not_creatable(out) or (f"{out} is not writable" if out.exists() and not os.access(out, os.W_OK) else None)
    if why:
        raise PictureError(f"cannot write --html {out}: {why}")
    return out


def check_png_folder(path: str | os.PathLike) -> Path:
    """The folder --png writes its files into (made when missing), refused in one line when it cannot be."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise PictureError(f"--png {out} is a file, not a folder")
    why = why_not_creatable(out / "x.png") if not out.exists() else None
    if out.exists() and not os.access(out, os.W_OK | os.X_OK):
        why = f"the folder {out} is not writable"
    if why:
        raise PictureError(f"cannot write --png {out}: {why}")
    return out


def png_names() -> list[str]:
    """The PNG files --png writes, in the report's order (stable: the figures' names)."""
    return [f"{name}.png" for name, _, _ in FIGURES]


def report_html_fragment(report: dict) -> str:
    """The text report as an HTML <pre> block with inline styles (rich's own export), no page around it."""
    from rich.console import Console

    from .summary import print_report

    console = Console(record=True, file=io.StringIO(), width=120, color_system="truecolor", force_terminal=True)
    print_report(report, console)
    return console.export_html(
        inline_styles=True,
        code_format='<pre class="report" style="color:{foreground};background-color:{background}"><code>{code}</code></pre>',
    )


def html_document(title: str, report_fragment: str, drawn: list[tuple[Drawn, bytes]]) -> str:
    """One HTML page: the text report, then each figure as an <img> with a data URI."""
    figures = []
    index = []
    for d, png in drawn:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        caption = html.escape(d.caption)
        index.append(f'<li><a href="#{d.name}">{html.escape(d.name.replace("_", " "))}</a></li>')
        figures.append(
            f'<figure id="{d.name}">\n<img src="{uri}" alt="{html.escape(d.name)}: {caption}">\n'
            f"<figcaption>{caption}</figcaption>\n</figure>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1180px;margin:1em auto;padding:0 1em;color:#111}"
        "pre.report{font-family:Menlo,'DejaVu Sans Mono',Consolas,monospace;font-size:12px;padding:1em;"
        "overflow-x:auto}figure{margin:2em 0}img{max-width:100%;height:auto}figcaption{color:#444}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<h2>Report</h2>\n{report_fragment}\n"
        f"<h2>Figures</h2>\n<ul>{''.join(index)}</ul>\n" + "\n".join(figures) + "\n</body>\n</html>\n"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_folder(folder: Path) -> Path | None:
    """Make `folder` and its missing parents; returns the topmost one made (to remove on failure), else None."""
    top = None
    for p in (folder, *folder.parents):
        if p.exists():
            break
        top = p
    folder.mkdir(parents=True, exist_ok=True)
    return top


def _stage_file(out: Path, data: bytes) -> Path:
    """`data` in a temporary file beside `out` (renamed over it by the caller once every output is staged)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # a temporary file is private; the report is as shareable as any file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _stage_folder(folder: Path, files: dict[str, bytes]) -> Path:
    """The files in a temporary folder beside `folder` (moved into place by `_commit_folder`)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # a temporary folder is private; the PNG folder is an ordinary one
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return tmp


def _commit_folder(tmp: Path, folder: Path, names: list[str]) -> None:
    """A new folder is the staged one renamed; an existing one gets the files renamed into it (others kept)."""
    if folder.exists():
        for name in names:
            os.replace(tmp / name, folder / name)
    else:
        os.replace(tmp, folder)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_pictures(
    store: ActivationStore,
    report: dict,
    *,
    html_path: str | os.PathLike | None = None,
    png_folder: str | os.PathLike | None = None,
    title: str = "autointerp report",
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw every figure of `report`'s run (its explainer and prices) and write the HTML file and/or the PNG
    folder; returns the paths written. Raises PictureError before writing anything when there is nothing to draw."""
    html_out = check_html_path(html_path) if html_path is not None else None
    png_out = check_png_folder(png_folder) if png_folder is not None else None
    explainer = report["explainer"]
    if not report["scores"]:
        raise PictureError(
            f"{store.path} holds no scores for explainer {printable(explainer)!r}: nothing to draw "
            "(run `autointerp score` or `autointerp batch` first)"
        )
    basis = report["price_basis"]
    data = RunData(store, explainer, basis["usd_per_million_prompt_tokens"], basis["usd_per_million_output_tokens"])
    drawn = draw_all(data, progress)
    rendered = []
    for i, d in enumerate(drawn, 1):
        if progress is not None:
            progress(f"rendering figure {i}/{len(drawn)}: {d.name.replace('_', ' ')}")
        rendered.append((d, png_bytes(d.figure)))
    # Everything is made in memory before the first write, so a failure while drawing leaves no file behind.
    page = html_document(title, report_html_fragment(report), rendered) if html_out is not None else None
    if progress is not None:
        progress("writing")
    # Every output is staged beside its target first, then renamed into place: a failure while writing (a full
    # disk) leaves neither a partial PNG folder nor a partial HTML file, nor any folder this call made.
    pngs = {f"{d.name}.png": png for d, png in rendered}
    made: list[Path] = []
    staged: list[Path] = []
    try:
        for target in (png_out.parent if png_out is not None else None, html_out.parent if html_out else None):
            top = _make_folder(target) if target is not None else None
            if top is not None:
                made.append(top)
        png_tmp = _stage_folder(png_out, pngs) if png_out is not None else None
        if png_tmp is not None:
            staged.append(png_tmp)
        html_tmp = _stage_file(html_out, page.encode("utf-8")) if html_out is not None and page is not None else None
        if html_tmp is not None:
            staged.append(html_tmp)
        if png_out is not None and png_tmp is not None:
            _commit_folder(png_tmp, png_out, list(pngs))
        if html_out is not None and html_tmp is not None:
            os.replace(html_tmp, html_out)
    except BaseException:
        for path in (*staged, *made):
            _remove(path)
        raise
    finally:
        for path in staged:  # what is left of a staged folder once its files moved into an existing one
            if path.exists():
                _remove(path)
    written = [png_out / name for name in pngs] if png_out is not None else []
    return written + ([html_out] if html_out is not None else [])
