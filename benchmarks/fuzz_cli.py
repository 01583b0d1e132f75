"""Fuzz the ``dlfd`` command line in-process with mostly valid inputs.

Every case calls ``dlfd.cli.main(argv)`` once, in this process, inside a sandbox built at the
start (a tiny manifest dataset of 20 people x 6 PNG images of 16x16 pixels, one small trained
model and its retrained reference). The generators make mostly *valid* inputs, varied in
harmless ways, so that the success paths run, plus a minority (about 20%) of mutations:

- ``manifests``: ``dlfd data info`` / ``dlfd data check`` on a CSV manifest;
- ``forget``: ``dlfd evaluate -m MODEL --forget LIST`` on forget lists;
- ``sidecars``: ``dlfd evaluate`` on a copy of the model with an edited JSON sidecar;
- ``results``: ``dlfd report`` on a hand-made bench folder (results.json and run files);
- ``recipes``: ``dlfd bench --recipe R`` (mostly refused before any training; a few valid
  recipes run ``--methods original --seeds 0`` on cached checkpoints);

and a few cases of each kind have odd command-line paths (markup, ``$``, unicode, spaces).

Measured per case: the exit code (0, 2 = a ``DlfdError`` printed as one ``error:`` line, or
another code where documented), and three counts that must be 0:

- exceptions other than ``SystemExit`` escaping ``main`` (a bug: argv, inputs and traceback
  are recorded), plus cases still running after ``--case-timeout`` seconds;
- crashes of the error printer (stderr containing ``Traceback`` or ``MarkupError``);
- files changed outside the case's output folder: every file of the sandbox except
  ``out/<case>/`` is fingerprinted (path, kind, size, mtime_ns, sha256 of small files, link
  target) before and after each case; any difference (a changed, new or deleted file) counts.
  dlfd's hash cache lives outside the sandbox (``DLFD_CACHE_DIR``).

Also reported, without failing the run: exit codes a command does not document
(``unexpected_exit_codes``), typer usage errors (``exit_2_usage``), ``error:`` messages that
span several lines (``exit_2_error_not_last_line``), valid inputs that were refused
(``valid_inputs_refused``: a sign that a generator or dlfd is wrong) and bugs of the
generators themselves (``generator_errors``).

Inputs of a case go to ``in/<case>/`` (manifests to ``data/`` beside the images, which they
must name by relative path), outputs to ``out/<case>/``; both are removed after the case
unless it failed. Writes a JSON summary and exits 1 when a "must be 0" count is not 0.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/fuzz_cli.py \\
        [--cases 10000] [--seed 0] [--kinds manifests,forget,...] [--out runs/fuzz_cli.json]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The share of each kind in a run. Measured on 2 idle CPU cores (mean seconds per case):
#: manifests 0.03, forget 0.10, sidecars 0.09, results 0.06 (figures in 8% of them), recipes 0.10;
#: about 12 cases/s overall, so 10,000 cases take about 15 minutes (twice that on a busy machine).
WEIGHTS = {"manifests": 0.3, "forget": 0.2, "sidecars": 0.2, "results": 0.22, "recipes": 0.08}
PEOPLE = 20
IMAGES_PER_PERSON = 6
SIZE = 16
#: Identities of the base manifest: plain names, plus some with characters that mean something
#: to rich markup, matplotlib mathtext, Markdown or forget-list comments.
ODD_NAMES = {3: "p#03", 5: "[b]05[/b]", 7: "$x$07", 9: "\u00e9mile09", 11: "[/]11"}
MUTATION_SHARE = 0.2
ARGV_SHARE = 0.03
SMALL_FILE = 1 << 20
MAX_EXAMPLES = 20
MAX_SAME_EXAMPLES = 3  # failure examples kept per (kind, label, problems, exit code)
SHOWN_BYTES = 1500
ODD_PATH_PARTS = ["[/]", "[bold]x[/bold]", "$x^2$", "a b", "\u00e9\u4e2d", "#c", "%s", "{0}", "-x"]


class CaseTimeout(BaseException):
    """Raised by the alarm when a case runs too long (a BaseException, so no except catches it)."""


@dataclass
class Case:
    """One command line and the input files it needs (paths relative to the sandbox)."""

    kind: str
    label: str  # what the generator did: "valid:..." or "mutation:..." or "argv:..."
    argv: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # link -> target
    folders: list[str] = field(default_factory=list)
    allowed_exits: tuple[int, ...] = (0, 2)

    @property
    def valid(self) -> bool:
        return self.label.startswith("valid")


@dataclass
class World:
    """What the generators know about the sandbox."""

    root: Path  # the sandbox (the current directory while cases run)
    outside: Path  # a folder beside the sandbox that links may point to
    rows: list[dict[str, str]]  # the base manifest's rows
    people: list[str]
    train_people: list[str]
    held_people: list[str]
    forget_people: list[str]
    images_of: dict[str, list[str]]
    model: str
    reference: str
    sidecar: dict[str, Any]
    manifest: str


# --------------------------------------------------------------------------- sandbox


def _png(rng: random.Random) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (SIZE, SIZE, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype("uint8")).save(buffer, format="PNG")
    return buffer.getvalue()


def _csv_text(
    rows: list[dict[str, str]], columns: list[str], *, quoting: int = csv.QUOTE_MINIMAL
) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, quoting=quoting, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def run_quiet(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` with its output captured: (exit code, stdout, stderr)."""
    from dlfd.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code: int = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, stdout.getvalue(), stderr.getvalue()


def build_sandbox(top: Path, seed: int) -> World:
    """Images, the base manifest, a trained model and its retrained reference."""
    from dlfd.runs.scenario import load_scenario

    rng = random.Random(f"sandbox:{seed}")
    root, outside = top / "sandbox", top / "outside"
    for folder in (root / "data", root / "models", root / "in", root / "out", outside):
        folder.mkdir(parents=True)
    (outside / "secret.png").write_bytes(_png(rng))
    rows = []
    for p in range(PEOPLE):
        person = ODD_NAMES.get(p, f"p{p:02d}")
        (root / "data" / f"p{p:02d}").mkdir()
        for k in range(IMAGES_PER_PERSON):
            path = f"p{p:02d}/{k}.png"
            (root / "data" / path).write_bytes(_png(rng))
            rows.append({"path": path, "label": ("glasses", "plain")[p % 2], "identity": person})
    manifest = root / "data" / "manifest.csv"
    manifest.write_text(_csv_text(rows, ["path", "label", "identity"]), encoding="utf-8")
    model, reference = root / "models" / "m.safetensors", root / "models" / "ref.safetensors"
    for out, role in ((model, "original"), (reference, "retrained")):
        argv = ["train", "-d", "csv", "--data-root", str(manifest), "--out", str(out)]
        argv += ["--model", "small_cnn", "--image-size", str(SIZE), "--epochs", "1", "--quiet"]
        argv += ["--set", "batch_size=64", "--role", role, "--device", "cpu"]
        code, _, err = run_quiet(argv)
        if code != 0:
            raise SystemExit(f"training the sandbox model failed ({code}):\n{err}")
    scenario = load_scenario("csv", split_seed=0, data_root=manifest, image_size=SIZE)
    problem = scenario.problem
    ids = problem.records.identities
    train = {ids[i] for i in problem.train.tolist()}
    people = sorted({r["identity"] for r in rows})
    images_of: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        images_of[r["identity"]].append(r["path"])
    return World(
        root=root,
        outside=outside,
        rows=rows,
        people=people,
        train_people=sorted(train),
        held_people=sorted(set(people) - train),
        forget_people=problem.forget_identities(),
        images_of=dict(images_of),
        model="models/m.safetensors",
        reference="models/ref.safetensors",
        sidecar=json.loads((root / "models" / "m.json").read_text(encoding="utf-8")),
        manifest="data/manifest.csv",
    )


# --------------------------------------------------------------------------- fingerprints


Fingerprint = dict[str, tuple[Any, ...]]


def fingerprint(top: Path, skip: set[Path]) -> Fingerprint:
    """(kind, size, mtime_ns, sha256 or link target) of everything under ``top`` but ``skip``."""
    found: Fingerprint = {}
    stack = [top]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = Path(entry.path)
                if path in skip:
                    continue
                info = entry.stat(follow_symlinks=False)
                key = str(path.relative_to(top))
                if stat.S_ISLNK(info.st_mode):
                    found[key] = ("link", os.readlink(path))
                elif stat.S_ISDIR(info.st_mode):
                    found[key] = ("dir",)
                    stack.append(path)
                elif stat.S_ISREG(info.st_mode):
                    digest = None
                    if info.st_size <= SMALL_FILE:
                        digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    found[key] = ("file", info.st_size, info.st_mtime_ns, digest)
                else:
                    found[key] = ("other", stat.S_IFMT(info.st_mode))
    return found


def differences(before: Fingerprint, after: Fingerprint) -> list[str]:
    changed = [f"changed {k}" for k in before if k in after and before[k] != after[k]]
    changed += [f"deleted {k}" for k in before if k not in after]
    changed += [f"new {k}" for k in after if k not in before]
    return sorted(changed)


# --------------------------------------------------------------------------- generators


def _odd_output(rng: random.Random, case_dir: str, name: str) -> str:
    """An output path inside ``case_dir`` with a markup-like or otherwise odd folder name."""
    return f"{case_dir}/{rng.choice(ODD_PATH_PARTS)}/{name}"


def gen_manifests(rng: random.Random, world: World, case_id: str) -> Case:
    """``dlfd data info`` / ``data check`` on a manifest varied in valid ways, or mutated."""
    out_dir, name = f"out/{case_id}", f"data/{case_id}.csv"
    rows = [dict(r) for r in world.rows]
    columns = ["path", "label", "identity"]
    labels: list[str] = []
    links: dict[str, str] = {}
    folders: list[str] = []
    rename = {}
    if rng.random() < 0.3:  # identities with odd characters
        pool = ["[x]", "[/]", "#", "$a$", "\u00e9", "\u4e2d", " ", "\\", "'", "<b>", "%d"]
        rename = {p: f"{p}{rng.choice(pool)}{i}" for i, p in enumerate(world.people)}
        for r in rows:
            r["identity"] = rename[r["identity"]]
        labels.append("odd-identities")
    if rng.random() < 0.3:
        rng.shuffle(rows)
        labels.append("shuffled")
    if rng.random() < 0.2:  # keep a subset of the people
        keep = set(rng.sample(world.people, rng.randint(12, PEOPLE)))
        keep = {rename.get(p, p) for p in keep}
        rows = [r for r in rows if r["identity"] in keep]
        labels.append("some-people")
    if rng.random() < 0.15:  # drop single images
        rows = [r for r in rows if rng.random() > 0.1]
        labels.append("some-images")
    if rng.random() < 0.2:
        for r in rows:
            r["label"] = {"glasses": "1", "plain": "0"}[r["label"]]
        labels.append("numeric-labels")
    if rng.random() < 0.2:
        for r in rows:
            r["path"] = "./" + r["path"]
        labels.append("dot-slash")
    if rng.random() < 0.15:
        columns += ["note", "age"]
        for r in rows:
            r["note"], r["age"] = (
                rng.choice(["", "x, y", 'say "hi"', "[/]"]),
                str(rng.randint(1, 90)),
            )
        labels.append("extra-columns")
    if rng.random() < 0.15:
        columns.remove("identity")
        labels.append("no-identity")
    elif rng.random() < 0.15:  # a split column: whole people per split
        people = sorted({r["identity"] for r in rows})
        rng.shuffle(people)
        plan = ["forget"] * 2 + ["val"] * 2 + ["test"] * 2 + ["unseen"] * 2
        where = {p: plan[k] if k < len(plan) else "retain" for k, p in enumerate(people)}
        for r in rows:
            r["split"] = where[r["identity"]]
        columns.append("split")
        labels.append("split-column")
    if rng.random() < 0.2:
        rng.shuffle(columns)
        labels.append("column-order")
    quoting = csv.QUOTE_ALL if rng.random() < 0.2 else csv.QUOTE_MINIMAL
    if quoting == csv.QUOTE_ALL:
        labels.append("quoted")
    mutation = None
    if rng.random() < MUTATION_SHARE:
        mutation = rng.choice(
            [
                "missing-file",
                "absolute-path",
                "dotdot",
                "duplicate-row",
                "empty-label",
                "nul-byte",
                "single-class",
                "wrong-column-count",
                "not-utf8",
                "huge-field",
                "folder-path",
                "symlink-outside",
                "no-path-column",
                "duplicate-column",
                "empty-file",
                "header-only",
                "bad-split",
                "unclosed-quote",
                "multilabel-bad",
                "backslash-path",
                "empty-path",
            ]
        )
        pick = rng.randrange(len(rows))
        if mutation == "missing-file":
            rows[pick]["path"] = "p00/missing.png"
        elif mutation == "absolute-path":
            rows[pick]["path"] = str(world.root / "data" / "p00" / "0.png")
        elif mutation == "dotdot":
            rows[pick]["path"] = rng.choice(["../outside/secret.png", "p00/../../x.png", ".."])
        elif mutation == "duplicate-row":
            rows.append(dict(rows[pick]))
        elif mutation == "empty-label" and "label" in columns:
            rows[pick]["label"] = ""
        elif mutation == "nul-byte":
            rows[pick][rng.choice(columns)] += "\x00"
        elif mutation == "single-class":
            for r in rows:
                r["label"] = "only"
        elif mutation == "folder-path":
            rows[pick]["path"] = rng.choice(["p01", "p01/", ".", f"{case_id}-dir.png"])
            folders.append(f"data/{case_id}-dir.png")
        elif mutation == "symlink-outside":
            links[f"data/{case_id}-link.png"] = str(world.outside / "secret.png")
            rows[pick]["path"] = f"{case_id}-link.png"
        elif mutation == "no-path-column":
            columns[columns.index("path")] = "file"
            for r in rows:
                r["file"] = r["path"]
        elif mutation == "duplicate-column":
            columns.append("label")
        elif mutation == "bad-split":
            if "split" not in columns:
                columns.append("split")
            for r in rows:
                r["split"] = r.get("split") or "retain"
            rows[pick]["split"] = rng.choice(["train", "Forget", "[/]", ""])
        elif mutation == "multilabel-bad":
            columns = [c for c in columns if c != "label"] + ["label_glasses", "label_x"]
            for r in rows:
                r["label_glasses"] = "1" if r["label"] in ("glasses", "1") else "0"
                r["label_x"] = rng.choice(["0", "1"])
            rows[pick]["label_x"] = rng.choice(["yes", "nan", "", "1e400", "[/]"])
        elif mutation == "backslash-path":
            rows[pick]["path"] = rows[pick]["path"].replace("/", "\\")
        elif mutation == "empty-path":
            rows[pick]["path"] = rng.choice(["", " ", "./"])
    text = _csv_text(rows, columns, quoting=quoting)
    if mutation == "wrong-column-count":
        lines = text.split("\n")
        k = rng.randrange(1, len(lines) - 1)
        lines[k] = lines[k] + ",extra" if rng.random() < 0.5 else lines[k].rsplit(",", 1)[0]
        text = "\n".join(lines)
    elif mutation == "huge-field":
        text = text.replace("\n", f",{'x' * rng.choice([10_000, 200_000])}\n", 2)
    elif mutation == "empty-file":
        text = rng.choice(["", "\n", "\ufeff", " \r\n"])
    elif mutation == "header-only":
        text = text.split("\n", 1)[0] + "\n"
    elif mutation == "unclosed-quote":
        text = text.replace(",", ',"', 1)
    if rng.random() < 0.2:
        text = text.replace("\n", "\r\n")
        labels.append("crlf")
    if rng.random() < 0.15:
        text = "\ufeff" + text
        labels.append("bom")
    data = text.encode("utf-8")
    if mutation == "not-utf8":
        data = text.encode("utf-8") + "caf\u00e9,plain,x\n".encode("latin-1")
    argv = ["data", "info", "-d", "csv", "--data-root", name]
    allowed: tuple[int, ...] = (0, 2)
    if rng.random() < 0.3:
        argv = ["data", "check", "-d", "csv", "--data-root", name]
        allowed = (0, 1, 2)  # 1: leaks found
        if rng.random() < 0.7:
            argv += ["--json", f"{out_dir}/leaks.json"]
    if rng.random() < 0.3:
        argv += ["--split-seed", str(rng.choice([0, 1, 7, 2**31, 2**32 - 1]))]
    if rng.random() < 0.2:
        levels = ["auto", "instance"] + ["identity"] * ("identity" in columns)
        levels += ["mixed"] * ("split" in columns)
        argv += ["-O", f"level={rng.choice(levels)}"]
    if rng.random() < 0.1:
        argv += ["-O", f"leaks={rng.choice(['refuse', 'drop', 'drop-near'])}"]
    if rng.random() < 0.1:
        argv += ["--image-size", str(rng.choice([8, 16, 32]))]
    label = "valid:" + "+".join(labels or ["plain"])
    if mutation:
        label = f"mutation:{mutation}"
    if rng.random() < ARGV_SHARE:
        argv, label = _argv_variant(rng, argv, out_dir, "manifests"), "argv"
    return Case(
        "manifests",
        label,
        argv,
        files={name: data},
        links=links,
        folders=folders,
        allowed_exits=allowed,
    )


def _forget_entry(rng: random.Random, text: str) -> str:
    """One forget-list line naming ``text``: escaped, quoted or plain, maybe with a comment."""
    if text != text.strip():
        style = "quoted"
    elif "#" in text:
        style = rng.choice(["escaped", "quoted"])
    else:
        style = rng.choice(["plain", "plain", "quoted"])
    if style == "quoted":
        line = json.dumps(text, ensure_ascii=rng.random() < 0.5)
    elif style == "escaped":
        line = text.replace("\\", "\\\\").replace("#", "\\#")
    else:
        line = text
    if rng.random() < 0.3:
        line += rng.choice(["  # gone", "\t# [/] comment", " #"])
    if rng.random() < 0.2:
        line = rng.choice([" ", "\t", "  "]) + line
    return line


def gen_forget(rng: random.Random, world: World, case_id: str) -> Case:
    """``dlfd evaluate -m MODEL --forget LIST``: lists of training people and their images."""
    out_dir, name = f"out/{case_id}", f"in/{case_id}/forget.txt"
    chosen = rng.sample(world.train_people, rng.randint(1, 4))
    entries: list[str] = []
    labels = []
    with_reference = rng.random() < 0.15  # the scenario's own forget set, and the reference
    if with_reference:
        chosen = list(world.forget_people)
        rng.shuffle(chosen)
        labels.append("reference")
    for person in chosen:
        if rng.random() < 0.3:  # the person's images instead of the name
            paths = list(world.images_of[person])
            rng.shuffle(paths)
            prefix = "./" if rng.random() < 0.3 else ""
            entries += [prefix + p for p in paths]
            labels.append("images")
        else:
            entries.append(person)
    lines = [_forget_entry(rng, e) for e in entries]
    if rng.random() < 0.4:
        for _ in range(rng.randint(1, 3)):
            lines.insert(rng.randint(0, len(lines)), rng.choice(["", "# a comment", "  ", "#"]))
        labels.append("comments")
    if rng.random() < 0.2:
        lines.append(lines[0])  # a repeated entry
        labels.append("repeated")
    mutation = None
    if rng.random() < MUTATION_SHARE:
        mutation = rng.choice(
            [
                "unknown-person",
                "held-out-person",
                "path-outside",
                "markup",
                "binary",
                "empty",
                "not-utf8",
                "unclosed-quote",
                "quote-then-text",
                "part-of-person",
                "absolute-path",
                "nul",
                "quoted-number",
            ]
        )
        if mutation == "unknown-person":
            lines.append(rng.choice(["nobody", "p99", "P00", "p00 x"]))
        elif mutation == "held-out-person" and world.held_people:
            lines.append(_forget_entry(rng, rng.choice(world.held_people)))
        elif mutation == "path-outside":
            lines.append(rng.choice(["../outside/secret.png", "p00/../../x.png", ".."]))
        elif mutation == "markup":
            lines.append(rng.choice(["[/]", "[bold red]x", "[link=file:///etc]y[/link]", "$\\x$"]))
        elif mutation == "part-of-person":
            lines = [world.images_of[chosen[0]][0]]
        elif mutation == "absolute-path":
            lines.append(str(world.root / "data" / world.images_of[chosen[0]][0]))
        elif mutation == "unclosed-quote":
            lines.append('"p00')
        elif mutation == "quote-then-text":
            lines.append('"p00" p01')
        elif mutation == "quoted-number":
            lines.append(
                rng.choice(["12", "[1]", "null"]).join('""') if rng.random() < 0.5 else '"\\u0000"'
            )
        elif mutation == "nul":
            lines.append("p0\x000")
        elif mutation == "empty":
            lines = rng.choice([[], ["# nothing"], ["", "  "], ['""']])
    newline = "\r\n" if rng.random() < 0.2 else "\n"
    text = newline.join(lines) + (newline if rng.random() < 0.8 else "")
    if rng.random() < 0.15:
        text = "\ufeff" + text
        labels.append("bom")
    data = text.encode("utf-8")
    if mutation == "binary":
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    elif mutation == "not-utf8":
        data += b"caf\xe9\n"
    argv = ["evaluate", "-m", world.model, "--forget", name, "--device", "cpu"]
    if with_reference:
        argv += ["-r", world.reference]
    if rng.random() < 0.5:
        argv += ["--json", f"{out_dir}/e.json"]
    label = "valid:" + "+".join(labels or ["names"])
    if mutation:
        label = f"mutation:{mutation}"
    if rng.random() < ARGV_SHARE:
        argv, label = _argv_variant(rng, argv, out_dir, "forget"), "argv"
    return Case("forget", label, argv, files={name: data})


def _nested(depth: int) -> str:
    """A marker that :func:`_dumps` replaces with ``{"x": {"x": ... 1}}`` nested ``depth``
    levels (too deep for ``json.dumps`` itself)."""
    return f"__nested_{depth}__"


def _dumps(value: Any, indent: int | str | None = None) -> str:
    """``json.dumps`` that expands :func:`_nested` markers."""
    text = json.dumps(value, indent=indent)
    return re.sub(
        r'"__nested_(\d+)__"',
        lambda m: '{"x": ' * int(m.group(1)) + "1" + "}" * int(m.group(1)),
        text,
    )


def gen_sidecars(rng: random.Random, world: World, case_id: str) -> Case:
    """``dlfd evaluate`` on a copy of the model whose JSON sidecar is edited."""
    out_dir, folder = f"out/{case_id}", f"in/{case_id}"
    meta = json.loads(json.dumps(world.sidecar))
    labels = []
    if rng.random() < 0.3:
        items = list(meta.items())
        rng.shuffle(items)
        meta = dict(items)
        labels.append("key-order")
    if rng.random() < 0.3:
        meta["extra"] = {
            "note": rng.choice(["[/]", "$x$", "\u00e9", "a\nb"]),
            "n": [1, {"a": None}],
        }
        labels.append("extra")
    if rng.random() < 0.2:
        meta["created"] = rng.choice(["", "yesterday", "2000-01-01T00:00:00Z"])
        labels.append("created")
    if rng.random() < 0.1:
        meta["role"] = rng.choice(["model", "[/]", "retrained"])
        labels.append("role")
    mutation = None
    raw_text: str | None = None
    if rng.random() < 0.35:
        fields = sorted(world.sidecar)
        mutation = rng.choice(
            [
                "type",
                "type",
                "delete",
                "huge-int",
                "seed-2**63",
                "negative-seed",
                "input-4096",
                "input-odd",
                "negative-classes",
                "zero-classes",
                "classes-2**70",
                "wrong-task",
                "unknown-arch",
                "nan",
                "deep",
                "wrong-sha",
                "short-sha",
                "format",
                "not-object",
                "model-kwargs",
                "forget-keys",
                "options",
                "data-root",
                "bad-json",
                "not-utf8",
                "scenario",
            ]
        )
        key = rng.choice(fields)
        if mutation == "type":
            meta[key] = rng.choice([None, True, 1.5, "s", [1], {"a": 1}, -1, 10**30])
            mutation += f":{key}"
        elif mutation == "delete":
            meta.pop(key, None)
            mutation += f":{key}"
        elif mutation == "huge-int":
            meta[rng.choice(["num_classes", "split_seed", "train_seed"])] = 10 ** rng.choice(
                [19, 40, 400]
            )
        elif mutation == "seed-2**63":
            meta[rng.choice(["split_seed", "train_seed"])] = 2**63 + rng.randint(0, 5)
        elif mutation == "negative-seed":
            meta[rng.choice(["split_seed", "train_seed"])] = -1
        elif mutation == "input-4096":
            meta["input"]["size"] = [4096, 4096]
        elif mutation == "input-odd":
            meta["input"] = rng.choice(
                [
                    {**meta["input"], "size": [16]},
                    {**meta["input"], "size": [7, 7]},
                    {**meta["input"], "size": [16.5, 16]},
                    {**meta["input"], "size": [24, 24]},
                    {**meta["input"], "channels": 2},
                    {**meta["input"], "channels": 1},
                    {**meta["input"], "mean": [0.5]},
                    {**meta["input"], "std": [0, 0, 0]},
                    {**meta["input"], "grayscale": "yes"},
                    {**meta["input"], "grayscale": True},
                    {"size": [16, 16]},
                ]
            )
        elif mutation == "negative-classes":
            meta["num_classes"] = -2
        elif mutation == "zero-classes":
            meta["num_classes"] = 0
        elif mutation == "classes-2**70":
            meta["num_classes"] = 2**70
        elif mutation == "wrong-task":
            meta["task"] = rng.choice(["multilabel", "regression", "", "[/]"])
        elif mutation == "unknown-arch":
            meta["arch"] = rng.choice(["resnet999", "", "[/]", "$x$", "small_cnn ", "resnet18"])
        elif mutation == "nan":
            raw_text = json.dumps(meta).replace(
                '"num_classes": 2', f'"num_classes": {rng.choice(["NaN", "Infinity", "-Infinity"])}'
            )
        elif mutation == "deep":
            meta["extra"] = _nested(rng.choice([40, 5000, 200_000]))
        elif mutation == "wrong-sha":
            meta["weights_sha256"] = "0" * 64
        elif mutation == "short-sha":
            meta["weights_sha256"] = rng.choice(["", "abc", "z" * 64, "0" * 65])
        elif mutation == "format":
            meta["format"] = rng.choice(["dlfd-checkpoint/2", None, "", 1])
        elif mutation == "not-object":
            raw_text = rng.choice(["[]", "1", '"x"', "null", ""])
        elif mutation == "model-kwargs":
            meta["model_kwargs"] = rng.choice(
                [{"num_classes": 3}, {"1x": 1}, {"width": 10**9}, {"unknown": 1}, {"": 0}]
            )
        elif mutation == "forget-keys":
            meta["forget_keys"] = rng.choice([[1], ["nobody"], [], "p00", ["../x"], None])
        elif mutation == "options":
            meta["scenario_options"] = rng.choice(
                [{"level": 1}, {"x": "y"}, {"level": "mixed"}, {"leaks": "drop"}, []]
            )
        elif mutation == "data-root":
            meta["data_root"] = rng.choice(
                ["", "/nonexistent/m.csv", str(world.root / "data"), "[/]", "\x00"]
            )
        elif mutation == "bad-json":
            raw_text = json.dumps(meta)[: rng.randint(0, 200)]
        elif mutation == "scenario":
            meta["scenario"] = rng.choice(["orl-glasses", "nope", "", "[/]", "imagefolder"])
    if raw_text is None:
        raw_text = _dumps(meta, indent=rng.choice([None, 1, 2, "\t"]))
    data = raw_text.encode("utf-8")
    if mutation == "not-utf8":
        data = data.replace(b'"role": "original"', b'"role": "orig\xe9nal"') + b"\xff"
    weights = (world.root / world.model).read_bytes()
    argv = ["evaluate", "-m", f"{folder}/m.safetensors", "--device", "cpu"]
    if rng.random() < 0.4:
        argv += ["--json", f"{out_dir}/e.json"]
    if rng.random() < 0.15:
        argv += ["-r", world.reference]
    label = "valid:" + "+".join(labels or ["copy"])
    if mutation:
        label = f"mutation:{mutation}"
    if rng.random() < ARGV_SHARE:
        argv, label = _argv_variant(rng, argv, out_dir, "sidecars"), "argv"
    return Case(
        "sidecars",
        label,
        argv,
        files={f"{folder}/m.safetensors": weights, f"{folder}/m.json": data},
    )


METRICS = ("test_acc", "retain_acc", "forget_acc", "unseen_acc", "mia_acc", "forgetting_score")


def _bench_record(rng: random.Random, method: str, seed: int, timed: bool) -> dict[str, Any]:
    """A run record as ``dlfd bench`` writes it (see tests/test_report.py)."""
    metrics: dict[str, Any] = {m: round(rng.random(), 4) for m in METRICS}
    metrics["nomus"] = round(rng.random(), 4)
    metrics["avg_gap"] = round(rng.random() * 0.2, 4)
    if rng.random() < 0.1:
        metrics[rng.choice(METRICS)] = None
    record: dict[str, Any] = {
        "format": "dlfd-bench-run/1",
        "method": method,
        "seed": seed,
        "dataset": rng.choice(["csv", "orl-glasses", "mufac"]),
        "config": {
            "params": {"lr": 0.01, "forget_threshold": 0.15} if method == "dlfd" else {},
            "recipe": {"model": "small_cnn", "epochs": 1, "batch_size": 64, "lr": 0.01},
            "input": {"size": [16, 16]},
            "lambda": 0.5,
            "scenario_options": rng.choice([None, {}, {"level": "identity"}]),
        },
        "metrics": metrics,
        "selected": "last state",
        "split_sizes": {"retain": 60, "forget": 12},
        "hardware": {"platform": "fuzz", "cpu_threads": 2},
        "versions": {"dlfd": "0", "torch": "0"},
        "hashes": {"weights_sha256": "0" * 64},
    }
    if timed:
        record["wall_s"] = round(rng.random() * 30, 3)
        record["monitor_s"] = 0.0
    return record


def _details(rng: random.Random, method: str) -> dict[str, Any]:
    details: dict[str, Any] = {
        "losses": {
            split: [round(rng.gammavariate(2.0, 0.2), 5) for _ in range(rng.randint(1, 30))]
            for split in ("forget", "unseen", "retain")
        },
        "projection": {
            "method": "pca",
            "forget": [[rng.gauss(0, 1), rng.gauss(0, 1)] for _ in range(rng.randint(0, 20))],
            "unseen": [[rng.gauss(1, 1), rng.gauss(1, 1)] for _ in range(rng.randint(0, 20))],
        },
    }
    if method == "dlfd":
        details["readings"] = [
            {"where": f"batch {b}", "forgetting_score": 0.3 / b} for b in range(1, 6)
        ]
    return details


def gen_results(rng: random.Random, world: World, case_id: str) -> Case:
    """``dlfd report`` on a hand-made bench folder: results.json and optional run files."""
    out_dir = f"out/{case_id}"
    in_place = rng.random() < 0.3  # the folder inside the output folder, default outputs
    bench = f"{out_dir}/bench" if in_place else f"in/{case_id}/bench"
    methods = ["original", "retrain", "finetune", "dlfd", "neggrad", "scrub"]
    labels = []
    if rng.random() < 0.15:  # user-chosen method names, drawn and written literally
        odd = ["$\\undefined{x}$", "<script>x</script>", "[/]", "a|b", "*x*", "$x", "\u00e9 m"]
        methods = methods[:2] + rng.sample(odd, 2)
        labels.append("odd-names")
    methods = methods[: rng.randint(1, len(methods))]
    seeds = sorted(rng.sample(range(5), rng.randint(1, 3)))
    figures = rng.random() < 0.08
    if figures:
        labels.append("figures")
    with_run_files = figures or rng.random() < 0.4
    files: dict[str, bytes] = {}
    summaries = []
    for seed in seeds:
        for method in methods:
            rec = _bench_record(rng, method, seed, timed=figures and rng.random() < 0.7)
            if with_run_files:
                run_file = f"seed-{seed}/{method}.result.json"
                full = dict(rec)
                if figures:
                    full["details"] = _details(rng, method)
                if "/" not in method and "\x00" not in method:
                    files[f"{bench}/{run_file}"] = json.dumps(full).encode()
                    rec = {**rec, "run_file": run_file}
            summaries.append(rec)
    if rng.random() < 0.2:
        rng.shuffle(summaries)
        labels.append("shuffled")
    mutation = None
    raw: str | None = None
    if rng.random() < MUTATION_SHARE:
        mutation = rng.choice(
            [
                "seed-abc",
                "seed-bool",
                "metrics-list",
                "metric-string",
                "nan-constant",
                "deep",
                "run-file-absolute",
                "run-file-dotdot",
                "run-file-empty",
                "run-file-folder",
                "run-file-garbage",
                "method-empty",
                "not-a-list",
                "empty-list",
                "missing-results",
                "config-type",
                "input-size",
                "huge-number",
                "details-bad",
                "bad-json",
            ]
        )
        target = rng.choice(summaries)
        if mutation == "seed-abc":
            target["seed"] = "abc"
        elif mutation == "seed-bool":
            target["seed"] = True
        elif mutation == "metrics-list":
            target["metrics"] = [0.5, 0.6]
        elif mutation == "metric-string":
            target["metrics"]["test_acc"] = rng.choice(["high", [], {}, True])
        elif mutation == "nan-constant":
            target["metrics"]["test_acc"] = float("nan")
            raw = json.dumps(summaries)  # writes NaN
        elif mutation == "deep":
            target["config"]["params"] = _nested(rng.choice([31, 40, 5000]))
        elif mutation == "run-file-absolute":
            target["run_file"] = rng.choice(["/etc/passwd", str(world.root / world.manifest)])
        elif mutation == "run-file-dotdot":
            target["run_file"] = rng.choice(["../../data/manifest.csv", "seed-0/../../x.json"])
        elif mutation == "run-file-empty":
            target["run_file"] = rng.choice(["", None, 3, "\x00"])
        elif mutation == "run-file-folder":
            target["run_file"] = "seed-0" if with_run_files else "."
        elif mutation == "run-file-garbage":
            target["run_file"] = "garbage.result.json"
            files[f"{bench}/garbage.result.json"] = rng.choice(
                [b"\xff\xfe", b"[]", b'{"format": "x"}', b"{", json.dumps({**target}).encode()]
            )
        elif mutation == "method-empty":
            target["method"] = rng.choice(["", " ", None, 7])
        elif mutation == "not-a-list":
            raw = json.dumps(rng.choice([{"a": 1}, 1, "x", None]))
        elif mutation == "empty-list":
            raw = "[]"
        elif mutation == "config-type":
            target["config"] = rng.choice(["x", [], 1])
        elif mutation == "input-size":
            target["config"]["input"]["size"] = rng.choice(["16x16", [None, 16], [1e400], 16])
        elif mutation == "huge-number":
            big = '"nomus": 1' + "0" * 400
            raw = re.sub(r'"nomus": [-+.\deE]+', big, json.dumps(summaries), count=1)
        elif mutation == "details-bad":
            run_file = target.get("run_file")
            full = {**target, "details": {"losses": {"forget": ["x"]}}}
            if isinstance(run_file, str):
                files[f"{bench}/{run_file}"] = json.dumps(full).encode()
        elif mutation == "bad-json":
            raw = json.dumps(summaries)[: rng.randint(0, 100)]
    if mutation != "missing-results":
        text = raw if raw is not None else _dumps(summaries, indent=rng.choice([None, 2]))
        files[f"{bench}/results.json"] = text.encode("utf-8")
    argv = ["report", bench]
    if not in_place or rng.random() < 0.3:
        argv += ["--html", f"{out_dir}/r.html", "--md", f"{out_dir}/md/r.md"]
    label = "valid:" + "+".join(labels or ["tables"])
    if mutation:
        label = f"mutation:{mutation}"
    if rng.random() < ARGV_SHARE:
        argv, label = _argv_variant(rng, argv, out_dir, "results"), "argv"
    return Case("results", label, argv, files=files)


def gen_recipes(rng: random.Random, world: World, case_id: str) -> Case:
    """``dlfd bench --recipe R``: mostly recipes refused before any work, a few that run."""
    out_dir = f"out/{case_id}"
    recipe: dict[str, Any] = {
        "description": rng.choice(["fuzz", "[/] $x$", "\u00e9"]),
        "dataset": "csv",
        "methods": ["original"],
        "seeds": [0],
        "image_size": SIZE,
        "lambda": 0.5,
        "attacks": False,
        "set": {"recipe": {"model": "small_cnn", "epochs": 1, "batch_size": 64}},
    }
    mutation = None
    raw: str | None = None
    if rng.random() < 0.8:  # most cases: a recipe refused before training
        mutation = rng.choice(
            [
                "unknown-key",
                "type-seeds",
                "type-methods",
                "type-image-size",
                "bool-int",
                "lambda-range",
                "seed-negative",
                "seed-huge",
                "seed-dup",
                "unknown-method",
                "unknown-dataset",
                "option-unknown",
                "set-not-table",
                "set-flat",
                "set-unknown-method",
                "set-unknown-key",
                "set-bad-value",
                "image-size-small",
                "bad-syntax",
                "wrong-suffix",
                "empty",
                "not-utf8",
                "not-table",
                "options-type",
            ]
        )
        if mutation == "unknown-key":
            recipe[rng.choice(["epochs", "Dataset", "[/]", ""])] = 1
        elif mutation == "type-seeds":
            recipe["seeds"] = rng.choice(["0", 0, {"a": 1}])
        elif mutation == "type-methods":
            recipe["methods"] = rng.choice([1, {"a": 1}, [1, 2]])
        elif mutation == "type-image-size":
            recipe["image_size"] = rng.choice(["16", 16.5, [16]])
        elif mutation == "bool-int":
            recipe[rng.choice(["image_size", "split_seed"])] = True
        elif mutation == "lambda-range":
            recipe["lambda"] = rng.choice([-0.1, 2, 1e308, "x"])
        elif mutation == "seed-negative":
            recipe["seeds"] = [-1]
        elif mutation == "seed-huge":
            recipe["seeds"] = [2**63]
        elif mutation == "seed-dup":
            recipe["seeds"] = [0, 0]
        elif mutation == "unknown-method":
            recipe["methods"] = [rng.choice(["nope", "[/]", "$x$", "", "all "])]
        elif mutation == "unknown-dataset":
            recipe["dataset"] = rng.choice(["nope", "[/]", "", "CSV"])
        elif mutation == "option-unknown":
            recipe["options"] = {rng.choice(["nope", "[/]"]): "x"}
        elif mutation == "options-type":
            recipe["options"] = rng.choice([["a"], "level=identity"])
        elif mutation == "set-not-table":
            recipe["set"] = rng.choice([1, "x", [1]])
        elif mutation == "set-flat":
            recipe["set"] = {"lr": 0.1}
        elif mutation == "set-unknown-method":
            recipe["set"]["nope"] = {"lr": 0.1}
        elif mutation == "set-unknown-key":
            recipe["set"][rng.choice(["recipe", "dlfd", "all"])] = {"nope": 1}
        elif mutation == "set-bad-value":
            recipe["set"][rng.choice(["recipe", "finetune"])] = {
                rng.choice(["lr", "epochs", "batch_size"]): rng.choice([-1, "x", 1e400, 0])
            }
        elif mutation == "image-size-small":
            recipe["image_size"] = rng.choice([0, 4, -16, 10**9])
        elif mutation == "bad-syntax":
            raw = rng.choice(['dataset = "csv', "[set\n", "= 1", "a.b = [1,", '{"a": '])
        elif mutation == "empty":
            raw = ""
        elif mutation == "not-table":
            raw = rng.choice(["[1]", "1", '"x"'])
    suffix = ".json" if rng.random() < 0.5 else ".toml"
    if mutation == "wrong-suffix":
        suffix = rng.choice([".yaml", ".txt", ""])
    if mutation == "not-table" and suffix == ".toml":
        suffix = ".json"
    if raw is None:
        raw = json.dumps(recipe) if suffix != ".toml" else _toml(recipe)
    data = raw.encode("utf-8")
    if mutation == "not-utf8":
        data += b"\n# caf\xe9\n"
    name = f"in/{case_id}/recipe{suffix}"
    argv = ["bench", "--recipe", name, "--out", f"{out_dir}/b", "--data-root", world.manifest]
    argv += ["--quiet", "--device", "cpu"]
    if rng.random() < 0.3:
        argv += ["--methods", "original", "--seeds", "0"]
    label = f"mutation:{mutation}" if mutation else "valid:original"
    if rng.random() < ARGV_SHARE:
        argv, label = _argv_variant(rng, argv, out_dir, "recipes"), "argv"
    return Case("recipes", label, argv, files={name: data})


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
            + "}"
        )
    return json.dumps(str(value))


def _toml(data: dict[str, Any]) -> str:
    """A small TOML writer (inline tables) for recipe files."""
    return "".join(f"{json.dumps(str(k))} = {_toml_value(v)}\n" for k, v in data.items())


def _argv_variant(rng: random.Random, argv: list[str], out_dir: str, kind: str) -> list[str]:
    """The command line with an odd output path, a missing input with markup in its name, an
    output that is an input or a folder, or an out-of-range number."""
    choice = rng.choice(
        ["odd-output", "missing-input", "output-is-input", "output-folder", "num", "long-name"]
    )
    argv = list(argv)
    if choice == "long-name":  # a file name over the file system's limit (an OSError)
        name = rng.choice(["x", "[/]", "\u00e9"]) * 300
        flag = next((f for f in ("--json", "--html", "--out") if f in argv), None)
        if flag is not None:
            argv[argv.index(flag) + 1] = f"{out_dir}/{name}.json"
            return argv
        return [*argv, "--json", f"{out_dir}/{name}.json"] if kind != "results" else argv
    if choice == "odd-output":
        for flag in ("--json", "--html", "--md", "--out"):
            if flag in argv:
                i = argv.index(flag) + 1
                argv[i] = _odd_output(rng, out_dir, Path(argv[i]).name)
                return argv
        return argv + (["--json", _odd_output(rng, out_dir, "x.json")] if kind != "results" else [])
    if choice == "missing-input":
        missing = f"in/nope-{rng.choice(ODD_PATH_PARTS)}/x"
        for flag in ("--data-root", "--forget", "-m", "--recipe"):
            if flag in argv:
                argv[argv.index(flag) + 1] = missing + Path(argv[argv.index(flag) + 1]).suffix
                return argv
        return [*argv[:1], missing, *argv[2:]]
    if choice == "output-is-input":
        source = next(
            (argv[argv.index(f) + 1] for f in ("--data-root", "--forget", "-m") if f in argv), None
        )
        if source and "--json" in argv:
            argv[argv.index("--json") + 1] = source
        elif source and kind != "recipes":
            argv += ["--json", source]
        return argv
    if choice == "output-folder":
        if "--json" in argv:
            argv[argv.index("--json") + 1] = "data"
        elif kind == "results":
            argv += ["--html", "data"]
        return argv
    if argv[0] == "report":
        return [*argv, "--bogus-option"]
    flag = {"data": "--image-size", "evaluate": "--lambda"}.get(argv[0], "--split-seed")
    return [*argv, flag, rng.choice(["-1", "2e9", "x", "18446744073709551616", "nan", "0"])]


GENERATORS: dict[str, Callable[[random.Random, World, str], Case]] = {
    "manifests": gen_manifests,
    "forget": gen_forget,
    "sidecars": gen_sidecars,
    "results": gen_results,
    "recipes": gen_recipes,
}


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise CaseTimeout(f"still running after {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _shown_bytes(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(data)
    return text if len(text) <= SHOWN_BYTES else text[:SHOWN_BYTES] + f"... ({len(text)} chars)"


def write_inputs(root: Path, case: Case) -> None:
    for rel, data in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for rel, target in case.links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)
    for rel in case.folders:
        (root / rel).mkdir(parents=True, exist_ok=True)


def remove_inputs(root: Path, case: Case, case_id: str) -> None:
    for rel in [*case.files, *case.links, *case.folders]:
        path = root / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    for folder in (root / "in" / case_id, root / "out" / case_id):
        if folder.exists():
            shutil.rmtree(folder)


def run_case(world: World, case: Case, case_id: str, timeout: float) -> dict[str, Any]:
    """Run one case; returns its outcome (exit code, problems found)."""
    from dlfd.cli import main

    root = world.root
    top = root.parent
    out_dir = root / "out" / case_id
    write_inputs(root, case)
    skip = {out_dir, top / "cache"}
    before = fingerprint(top, skip)
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | None = 0
    problem: str | None = None
    trace = ""
    start = time.perf_counter()
    try:
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            deadline(timeout),
        ):
            main(list(case.argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CaseTimeout:
        code, problem, trace = None, "timeout", traceback.format_exc()
    except BaseException:  # any other exception is what we count
        code, problem, trace = None, "exception", traceback.format_exc()
    seconds = time.perf_counter() - start
    after = fingerprint(top, skip)
    changed = differences(before, after)
    err = stderr.getvalue()
    result: dict[str, Any] = {"code": code, "seconds": seconds, "problems": []}
    if problem:
        result["problems"].append(problem)
    if "Traceback" in err or "MarkupError" in err:
        result["problems"].append("printer-crash")
    if changed:
        result["problems"].append("files-changed")
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    result["error_line"] = error_lines[-1] if error_lines else None
    result["stderr"] = err[-2000:]
    shown = [line.strip(" │╭╮╰╯─") for line in err.splitlines()]
    result["last_line"] = next((line for line in reversed(shown) if line), "")
    result["usage_error"] = code == 2 and not error_lines
    if code == 2 and error_lines:
        last = [line for line in err.splitlines() if line.strip()][-1]
        result["error_not_last_line"] = not last.startswith("error:")
    if code is not None and code not in case.allowed_exits:
        result["unexpected_exit"] = True
    if result["problems"] or result.get("unexpected_exit"):
        result["example"] = {
            "case": case_id,
            "kind": case.kind,
            "label": case.label,
            "problems": result["problems"],
            "exit": code,
            "argv": case.argv,
            "inputs": {rel: _shown_bytes(data) for rel, data in case.files.items()},
            "links": case.links,
            "stderr": err[-3000:],
            "traceback": trace[-6000:],
            "changed": changed[:20],
        }
    if not result["problems"]:
        remove_inputs(root, case, case_id)
    return result


def plan_kinds(rng: random.Random, cases: int, kinds: list[str]) -> list[str]:
    """``cases`` kind names in the proportions of :data:`WEIGHTS`, shuffled."""
    total = sum(WEIGHTS[k] for k in kinds)
    counts = {k: int(cases * WEIGHTS[k] / total) for k in kinds}
    for k in kinds[: cases - sum(counts.values())]:
        counts[k] += 1
    order = [k for k in kinds for _ in range(counts[k])]
    rng.shuffle(order)
    return order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(GENERATORS), help="comma-separated kinds")
    parser.add_argument("--out", type=Path, default=Path("runs/fuzz_cli.json"))
    parser.add_argument("--case-timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the sandbox folder")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(GENERATORS))
    if unknown or not kinds:
        parser.error(f"unknown kinds {unknown}; known: {', '.join(GENERATORS)}")
    out_file = args.out.resolve()

    top = Path(tempfile.mkdtemp(prefix="dlfd-fuzz-"))
    os.environ["DLFD_CACHE_DIR"] = str(top / "cache")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MPLCONFIGDIR", str(top / "cache" / "matplotlib"))
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from dlfd.runtime import hardware_info

    cwd = os.getcwd()
    started = time.perf_counter()
    print(f"sandbox {top}; building ...", file=sys.stderr, flush=True)
    world = build_sandbox(top, args.seed)
    os.chdir(world.root)
    setup_s = time.perf_counter() - started
    print(f"sandbox ready in {setup_s:.1f}s", file=sys.stderr, flush=True)

    order = plan_kinds(random.Random(f"order:{args.seed}"), args.cases, kinds)
    per_kind: dict[str, Counter[str]] = defaultdict(Counter)
    per_label: dict[str, Counter[str]] = defaultdict(Counter)
    seconds: dict[str, float] = defaultdict(float)
    examples: list[dict[str, Any]] = []
    other_examples: list[dict[str, Any]] = []
    rejected_valid: dict[str, Counter[str]] = defaultdict(Counter)
    refused_examples: list[dict[str, Any]] = []
    multiline_examples: list[dict[str, Any]] = []
    seen: Counter[tuple[Any, ...]] = Counter()  # failures per (kind, label, problems, exit)
    totals: Counter[str] = Counter()
    run_start = time.perf_counter()
    try:
        for index, kind in enumerate(order):
            case_id = f"c{index:05d}"
            rng = random.Random(f"{args.seed}:{index}")
            try:
                case = GENERATORS[kind](rng, world, case_id)
            except Exception:  # a bug of this script, not of dlfd: counted, not fatal
                per_kind[kind]["generator_errors"] += 1
                totals["generator_errors"] += 1
                if len(other_examples) < MAX_EXAMPLES:
                    other_examples.append({"case": case_id, "generator": traceback.format_exc()})
                continue
            result = run_case(world, case, case_id, args.case_timeout)
            counts = per_kind[kind]
            counts["cases"] += 1
            seconds[kind] += result["seconds"]
            code = result["code"]
            if code == 0:
                counts["exit_0"] += 1
            elif code == 2:
                counts["exit_2"] += 1
                if result["usage_error"]:
                    counts["exit_2_usage"] += 1
                if result.get("error_not_last_line"):
                    counts["exit_2_error_not_last_line"] += 1
                    if len(multiline_examples) < MAX_EXAMPLES:
                        multiline_examples.append(
                            {"label": case.label, "argv": case.argv, "stderr": result["stderr"]}
                        )
                if case.valid:
                    message = result["error_line"] or "usage error: " + result["last_line"]
                    rejected_valid[kind][message[:60]] += 1
                    if len(refused_examples) < MAX_EXAMPLES:
                        refused_examples.append(
                            {"label": case.label, "argv": case.argv, "error": message}
                        )
            elif code is not None:
                counts[f"exit_{code}"] += 1
            group = case.label if case.label.startswith("mutation") else case.label.split(":")[0]
            per_label[kind][f"{group} -> {'exit 0' if code == 0 else code}"] += 1
            for problem in result["problems"]:
                counts[problem] += 1
                totals[problem] += 1
            if result.get("unexpected_exit"):
                counts["unexpected_exit"] += 1
                totals["unexpected_exit"] += 1
            if "example" in result:
                target = examples if result["problems"] else other_examples
                signature = (kind, case.label, tuple(result["problems"]), code)
                seen[signature] += 1
                if len(target) < MAX_EXAMPLES and seen[signature] <= MAX_SAME_EXAMPLES:
                    target.append(result["example"])
            if (index + 1) % 250 == 0 or index + 1 == len(order):
                rate = (index + 1) / (time.perf_counter() - run_start)
                print(
                    f"{index + 1}/{len(order)} cases, {rate:.1f}/s, problems {dict(totals)}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        os.chdir(cwd)
    run_s = time.perf_counter() - run_start
    summary = {
        "command": " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "cases": len(order),
        "seed": args.seed,
        "kinds": {
            k: {
                **dict(per_kind[k]),
                "seconds": round(seconds[k], 2),
                "mean_s": round(seconds[k] / per_kind[k]["cases"], 4),
            }
            for k in kinds
            if per_kind[k]
        },
        "outcomes_by_label": {k: dict(v) for k, v in per_label.items()},
        "valid_inputs_refused": {k: dict(v.most_common(10)) for k, v in rejected_valid.items()},
        "exceptions": totals["exception"],
        "timeouts": totals["timeout"],
        "printer_crashes": totals["printer-crash"],
        "files_changed": totals["files-changed"],
        "unexpected_exit_codes": totals["unexpected_exit"],
        "generator_errors": totals["generator_errors"],
        "setup_s": round(setup_s, 2),
        "seconds": round(run_s, 2),
        "cases_per_s": round(len(order) / run_s, 2) if run_s else None,
        "machine": hardware_info(),
        "sandbox": str(top) if args.keep or examples else None,
        "failures": examples,
        "unexpected_exit_examples": other_examples,
        "valid_inputs_refused_examples": refused_examples,
        "error_not_last_line_examples": multiline_examples,
    }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for kind in kinds:
        if per_kind[kind]:
            print(f"{kind:10s} {dict(per_kind[kind])} {seconds[kind]:.1f}s")
    bad = {k: summary[k] for k in ("exceptions", "timeouts", "printer_crashes", "files_changed")}
    print(
        f"{len(order)} cases in {run_s:.0f}s ({summary['cases_per_s']}/s); {bad}; wrote {out_file}"
    )
    if not args.keep and not examples:
        shutil.rmtree(top, ignore_errors=True)
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
