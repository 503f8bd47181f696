"""A corpus of hostile inputs, generated in a temporary folder (nothing is stored in the repo).

Each :class:`Case` is one bad (or odd but valid) input of one *kind* -- a photo, an identity
folder, a training config, a model artifact, a gallery, an embeddings file or a pairs file --
with what a correct program does with it (:attr:`Case.expect`):

- ``"refuse"``: the input must be refused: a one-line error, or (where a command skips bad
  items of a folder) a skip that names it. Exit 0 with the input used is a silent wrong answer.
- ``"accept"``: a valid input in an unusual encoding (16-bit PNG, EXIF-rotated JPEG, CMYK, ...):
  it must be processed, and *correctly*: a photo must embed like its plain 8-bit upright
  reference (:attr:`Case.reference`).
- ``"either"``: a policy choice (animated GIF: first frame or a counted skip; a file name that is
  not UTF-8: processed or skipped) -- anything but a traceback, and a skip must be named.

:func:`build_corpus` writes every case plus the shared good material (:class:`Base`: a toy
model, reference photos, a good identity folder, a gallery, an embeddings file, a pairs
folder); :mod:`tests.hostile.test_hostile_inputs` runs every command over it.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 48  # photo side (the toy model resizes to 24x24; above the loaders' minimum side)
GOOD_PEOPLE = {"anna": 3, "bert": 3, "carl": 2}


# --------------------------------------------------------------------------- good material
def smooth_pattern(seed: int, side: int = SIDE) -> np.ndarray:
    """A smooth random grey image (6x6 noise upsampled bicubically): stable under JPEG and
    resizing, different under rotation -- what the embedding checks need."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.uniform(20, 235, size=(6, 6)).astype(np.uint8), mode="L")
    return np.asarray(low.resize((side, side), Image.BICUBIC))


def ref_grey() -> np.ndarray:
    """The reference photo's pixels (grey, upright)."""
    return smooth_pattern(1000)


def _save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def person_photo(name: str, k: int) -> np.ndarray:
    """Photo ``k`` of a good identity: its pattern plus a little noise."""
    base = smooth_pattern(sum(map(ord, name))).astype(float)
    rng = np.random.default_rng(k + 17 * len(name))
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def make_good_folder(root: Path, people: dict[str, int] | None = None, ext: str = "png", lfw_names: bool = False) -> Path:
    """``root/<name>/<k>.<ext>`` (or LFW names ``<name>_000k.<ext>``) of :data:`GOOD_PEOPLE`."""
    for name, n in (people or GOOD_PEOPLE).items():
        for k in range(n):
            file = f"{name}_{k + 1:04d}.{ext}" if lfw_names else f"{k:02d}.{ext}"
            grey = person_photo(name, k)
            _save(grey if ext == "pgm" else np.stack([grey] * 3, axis=-1), root / name / file)
    return root


def make_png_header_bomb(path: Path, width: int = 13_000, height: int = 13_000) -> Path:
    """An all-black 8-bit grey PNG of ``width x height`` written without materialising the
    pixels (zero rows compressed in blocks; ~0.7 MB on disk, built once per size)."""
    path.write_bytes(_bomb_bytes(width, height))
    return path


@functools.lru_cache(maxsize=2)
def _bomb_bytes(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte 0 + zeros
    full, rest = divmod(height, 256)
    block = row * 256
    parts = [comp.compress(block) for _ in range(full)]
    parts += [comp.compress(row * rest), comp.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


@dataclass
class Base:
    """The good material every case is measured against."""

    root: Path
    model: Path = field(init=False)
    ref_png: Path = field(init=False)  #: the reference photo, lossless (RGB, R=G=B)
    ref_jpg: Path = field(init=False)  #: the same pixels as a JPEG (for lossy variants)
    other: Path = field(init=False)  #: a photo of somebody else (the second photo of verify)
    folder: Path = field(init=False)  #: a good identity folder (:data:`GOOD_PEOPLE`)
    lfw: Path = field(init=False)  #: the good people under LFW names (``<name>_0001.jpg``)
    gallery: Path = field(init=False)  #: a good gallery: the good folder plus ``ref``
    embeddings: Path = field(init=False)  #: a good ``facemetric embed`` file of the folder
    config: dict = field(init=False)  #: a tiny valid digits training config

    @property
    def good_photos(self) -> int:
        return sum(GOOD_PEOPLE.values())


# --------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    """One hostile input. ``build(dest, base)`` writes it at (or under) ``dest`` and returns the
    path the commands get; ``marker``: an ASCII fragment of the bad item's name, which a skip
    must show; ``reference``: for an ``accept`` photo, ``"png"`` or ``"jpg"`` -- the reference it
    must embed like (lossless or lossy tolerance); ``needs``: a reason the case cannot be built
    here (checked by :func:`unavailable`); ``omit_ok``: a folder walk may pass the item over
without a word (a sub-directory, a symlinked directory: not a photo to report)."""

    name: str
    kind: str
    expect: str
    build: Callable[[Path, Base], Path]
    marker: str | None = None
    reference: str | None = None
    needs: str | None = None
    omit_ok: bool = False


def unavailable(case: Case) -> str | None:
    """Why ``case`` cannot run here, or ``None``."""
    if case.needs == "non-root" and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "runs as root: chmod 000 does not make a file unreadable for root"
    return None


def _bytes(data: bytes, name: str) -> Callable[[Path, Base], Path]:
    def build(dest: Path, base: Base) -> Path:
        p = dest / name
        p.write_bytes(data)
        return p
    return build


# ---- photo builders (dest is an empty folder; the photo is created inside)
def _ph_empty(dest, base):
    return _bytes(b"", "empty.jpg")(dest, base)


def _ph_truncated(dest, base):
    data = jpeg_bytes(np.stack([ref_grey()] * 3, -1))
    return _bytes(data[: len(data) // 2], "truncated.jpg")(dest, base)


def _ph_text(dest, base):
    return _bytes(b"this is not a photo\n", "text.jpg")(dest, base)


def _ph_html(dest, base):
    return _bytes(b"<html><body>404 not found</body></html>\n", "download.png")(dest, base)


def _ph_dir(dest, base):
    p = dest / "x.jpg"
    p.mkdir()
    return p


def _ph_loop(dest, base):
    p = dest / "loop.jpg"
    os.symlink("loop.jpg", p)
    return p


def _ph_loop2(dest, base):
    a, b = dest / "ping.jpg", dest / "pong.jpg"
    os.symlink("pong.jpg", a)
    os.symlink("ping.jpg", b)
    return a


def _ph_dangling(dest, base):
    p = dest / "dangling.jpg"
    os.symlink("does-not-exist.jpg", p)
    return p


def _ph_missing(dest, base):
    return dest / "missing.jpg"


def _ph_unreadable(dest, base):
    p = shutil.copy(base.ref_png, dest / "unreadable.png")
    os.chmod(p, 0)
    return Path(p)


def _ph_fifo(dest, base):
    p = dest / "fifo.jpg"
    os.mkfifo(p)
    return p


def _ph_1x1(dest, base):
    return _save(np.full((1, 1, 3), 128, np.uint8), dest / "one-pixel.png")


def _ph_sliver(dest, base):
    return _save(np.stack([smooth_pattern(5, 300)[:3]] * 3, -1), dest / "sliver.png")


def _ph_blank(dest, base):
    return _save(np.zeros((200, 200, 3), np.uint8), dest / "black.png")


def _ph_bomb(dest, base):
    return make_png_header_bomb(dest / "bomb.png")


def _ph_header_only(dest, base):
    data = (base.ref_png).read_bytes()
    return _bytes(data[:40], "header-only.png")(dest, base)


def _ph_zero_dims(dest, base):
    # a PNG header that declares 0 x 0
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    return _bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""), "zero.png")(dest, base)


def _ph_nonutf8(dest, base):
    p = os.fsencode(dest) + b"/nonutf8-\xff\xfe.png"
    shutil.copy(base.ref_png, p)
    return Path(os.fsdecode(p))


def _ph_gif(dest, base):
    frames = [Image.fromarray(np.stack([ref_grey()] * 3, -1)), Image.fromarray(np.stack([smooth_pattern(77)] * 3, -1))]
    p = dest / "animated.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return p


# valid variants of the reference (accept; embedding compared to the reference)
def _ph_grey(dest, base):
    return _save(ref_grey(), dest / "grey.png")


def _ph_rgba(dest, base):
    g = ref_grey()
    return _save(np.stack([g, g, g, np.full_like(g, 255)], -1), dest / "rgba.png")


def _ph_la(dest, base):
    g = ref_grey()
    p = dest / "la.png"
    Image.fromarray(np.stack([g, np.full_like(g, 255)], -1), mode="LA").save(p)
    return p


def _ph_palette(dest, base):
    p = dest / "palette.png"
    Image.fromarray(ref_grey()).convert("P").save(p)
    return p


def _ph_pgm(dest, base):
    return _save(ref_grey(), dest / "grey.pgm")


def _ph_16bit_png(dest, base):
    p = dest / "sixteen.png"
    Image.fromarray(ref_grey().astype(np.uint16) * 257).save(p)  # mode I;16
    return p


def _ph_16bit_pgm(dest, base):
    g = ref_grey().astype(">u2") * 257
    header = f"P5\n{g.shape[1]} {g.shape[0]}\n65535\n".encode()
    return _bytes(header + g.tobytes(), "sixteen.pgm")(dest, base)


def _ph_exif(dest, base):
    """Pixels stored rotated; EXIF orientation 6 (rotate 90 CW to view) makes them upright."""
    g = np.stack([ref_grey()] * 3, -1)
    stored = np.rot90(g, k=1).copy()  # 90 CCW; a viewer turns it 90 CW back
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    p = dest / "rotated.jpg"
    img.save(p, quality=95, exif=exif)
    return p


def _ph_cmyk(dest, base):
    p = dest / "cmyk.jpg"
    Image.fromarray(np.stack([ref_grey()] * 3, -1)).convert("CMYK").save(p, quality=95)
    return p


def _ph_png_as_jpg(dest, base):
    p = dest / "really-a-png.jpg"
    shutil.copy(base.ref_png, p)
    return p


def _ph_bmp(dest, base):
    return _save(np.stack([ref_grey()] * 3, -1), dest / "ref.bmp")


def _ph_tiff(dest, base):
    return _save(np.stack([ref_grey()] * 3, -1), dest / "ref.tiff")


def _ph_webp(dest, base):
    return _save(np.stack([ref_grey()] * 3, -1), dest / "ref.webp", lossless=True)


def _ph_upscaled(dest, base):
    img = Image.fromarray(np.stack([ref_grey()] * 3, -1)).resize((1600, 1600), Image.BICUBIC)
    p = dest / "large.png"
    img.save(p, compress_level=1)
    return p


def _ph_uppercase_ext(dest, base):
    p = dest / "REF.PNG"
    shutil.copy(base.ref_png, p)
    return p


PHOTO_CASES = [
    Case("empty-file", "photo", "refuse", _ph_empty, "empty.jpg"),
    Case("truncated-jpeg", "photo", "refuse", _ph_truncated, "truncated.jpg"),
    Case("text-named-jpg", "photo", "refuse", _ph_text, "text.jpg"),
    Case("html-named-png", "photo", "refuse", _ph_html, "download.png"),
    Case("directory-named-jpg", "photo", "refuse", _ph_dir, "x.jpg"),
    Case("symlink-self-loop", "photo", "refuse", _ph_loop, "loop.jpg"),
    Case("symlink-two-loop", "photo", "refuse", _ph_loop2, "ping.jpg"),
    Case("dangling-symlink", "photo", "refuse", _ph_dangling, "dangling.jpg"),
    Case("missing-file", "photo", "refuse", _ph_missing, "missing.jpg"),
    Case("unreadable-file", "photo", "refuse", _ph_unreadable, "unreadable.png", needs="non-root"),
    Case("fifo-named-jpg", "photo", "refuse", _ph_fifo, "fifo.jpg"),
    Case("one-pixel", "photo", "refuse", _ph_1x1, "one-pixel.png"),
    Case("sliver-300x3", "photo", "refuse", _ph_sliver, "sliver.png"),
    Case("blank-black", "photo", "refuse", _ph_blank, "black.png"),
    Case("bomb-13000x13000", "photo", "refuse", _ph_bomb, "bomb.png"),
    Case("png-header-only", "photo", "refuse", _ph_header_only, "header-only.png"),
    Case("png-zero-size", "photo", "refuse", _ph_zero_dims, "zero.png"),
    Case("non-utf8-name", "photo", "either", _ph_nonutf8, "nonutf8"),
    Case("animated-gif", "photo", "either", _ph_gif, "animated.gif"),
    Case("grey-png", "photo", "accept", _ph_grey, "grey.png", reference="png"),
    Case("rgba-png", "photo", "accept", _ph_rgba, "rgba.png", reference="png"),
    Case("la-png", "photo", "accept", _ph_la, "la.png", reference="png"),
    Case("palette-png", "photo", "accept", _ph_palette, "palette.png", reference="png"),
    Case("pgm", "photo", "accept", _ph_pgm, "grey.pgm", reference="png"),
    Case("16-bit-png", "photo", "accept", _ph_16bit_png, "sixteen.png", reference="png"),
    Case("16-bit-pgm", "photo", "accept", _ph_16bit_pgm, "sixteen.pgm", reference="png"),
    Case("exif-rotated-jpeg", "photo", "accept", _ph_exif, "rotated.jpg", reference="jpg"),
    Case("cmyk-jpeg", "photo", "accept", _ph_cmyk, "cmyk.jpg", reference="jpg"),
    Case("png-named-jpg", "photo", "accept", _ph_png_as_jpg, "really-a-png.jpg", reference="png"),
    Case("bmp", "photo", "accept", _ph_bmp, "ref.bmp", reference="png"),
    Case("tiff", "photo", "accept", _ph_tiff, "ref.tiff", reference="png"),
    Case("webp-lossless", "photo", "accept", _ph_webp, "ref.webp", reference="png"),
    Case("large-1600px", "photo", "accept", _ph_upscaled, "large.png", reference="png"),
    Case("uppercase-extension", "photo", "accept", _ph_uppercase_ext, "REF.PNG", reference="png"),
]


# ---- identity folders: the good folder plus one hostile item (or a broken whole)
def _folder_with(photo_builder: Callable[[Path, Base], Path], where: str = "anna") -> Callable[[Path, Base], Path]:
    def build(dest: Path, base: Base) -> Path:
        root = dest / "people"
        shutil.copytree(base.folder, root, symlinks=True)
        photo_builder(root / where, base)
        return root
    return build


def _fo_empty_root(dest, base):
    (dest / "people").mkdir()
    return dest / "people"


def _fo_empty_identities(dest, base):
    for n in GOOD_PEOPLE:
        (dest / "people" / n).mkdir(parents=True)
    return dest / "people"


def _fo_no_images(dest, base):
    for n in GOOD_PEOPLE:
        (dest / "people" / n).mkdir(parents=True)
        (dest / "people" / n / "notes.txt").write_text("no photos here\n")
    return dest / "people"


def _fo_root_is_file(dest, base):
    p = dest / "people"
    p.write_text("a file, not a folder\n")
    return p


def _fo_missing(dest, base):
    return dest / "no-such-folder"


def _fo_dir_loop(dest, base):
    root = dest / "people"
    shutil.copytree(base.folder, root)
    os.symlink("..", root / "anna" / "loop")  # anna/loop -> people/ (a cycle for recursive walks)
    return root


def _fo_identity_loop(dest, base):
    root = dest / "people"
    shutil.copytree(base.folder, root)
    os.symlink(".", root / "selfloop")  # an "identity" that is the root itself
    return root


def _fo_nonutf8_identity(dest, base):
    root = dest / "people"
    shutil.copytree(base.folder, root)
    bad = os.fsencode(root) + b"/nonutf8-\xe9\xff"
    os.mkdir(bad)
    for k in range(2):
        shutil.copy(base.ref_png, bad + f"/{k:02d}.png".encode())
    return root


def _fo_only_dir_jpg(dest, base):
    root = dest / "people"
    (root / "anna" / "x.jpg").mkdir(parents=True)
    return root


FOLDER_ITEMS = [
    # (case name, photo builder, marker, expect): the hostile photo lands in people/anna/
    ("truncated-jpeg", _ph_truncated, "truncated.jpg", "refuse"),
    ("text-named-jpg", _ph_text, "text.jpg", "refuse"),
    ("empty-file", _ph_empty, "empty.jpg", "refuse"),
    ("directory-named-jpg", _ph_dir, "x.jpg", "refuse"),
    ("symlink-self-loop", _ph_loop, "loop.jpg", "refuse"),
    ("dangling-symlink", _ph_dangling, "dangling.jpg", "refuse"),
    ("unreadable-file", _ph_unreadable, "unreadable.png", "refuse"),
    ("fifo-named-jpg", _ph_fifo, "fifo.jpg", "refuse"),
    ("one-pixel", _ph_1x1, "one-pixel.png", "refuse"),
    ("blank-black", _ph_blank, "black.png", "refuse"),
    ("bomb-13000x13000", _ph_bomb, "bomb.png", "refuse"),
    ("non-utf8-file-name", _ph_nonutf8, "nonutf8", "either"),
    ("animated-gif", _ph_gif, "animated.gif", "either"),
    ("16-bit-png", _ph_16bit_png, "sixteen.png", "accept"),
    ("exif-rotated-jpeg", _ph_exif, "rotated.jpg", "accept"),
]

FOLDER_CASES = [
    Case(f"folder-{name}", "folder", expect, _folder_with(builder), marker,
         needs="non-root" if builder is _ph_unreadable else None, omit_ok=builder is _ph_dir)
    for name, builder, marker, expect in FOLDER_ITEMS
] + [
    Case("folder-empty-root", "folder", "refuse", _fo_empty_root),
    Case("folder-empty-identities", "folder", "refuse", _fo_empty_identities),
    Case("folder-no-images", "folder", "refuse", _fo_no_images),
    Case("folder-only-directory-named-jpg", "folder", "refuse", _fo_only_dir_jpg),
    Case("folder-root-is-a-file", "folder", "refuse", _fo_root_is_file),
    Case("folder-missing", "folder", "refuse", _fo_missing),
    Case("folder-directory-symlink-loop", "folder", "refuse", _fo_dir_loop, "loop", omit_ok=True),
    Case("folder-identity-symlink-to-root", "folder", "refuse", _fo_identity_loop, "selfloop", omit_ok=True),
    Case("folder-non-utf8-identity", "folder", "either", _fo_nonutf8_identity, "nonutf8"),
]


# ---- training configs (a tiny digits recipe with one bad value; or a bad file)
def _config(mutate: Callable[[dict], None] | None = None, text: str | bytes | None = None, name: str = "recipe.yaml"):
    def build(dest: Path, base: Base) -> Path:
        import yaml

        p = dest / name
        if text is not None:
            p.write_bytes(text if isinstance(text, bytes) else text.encode())
            return p
        cfg = json.loads(json.dumps(base.config))
        if mutate is not None:
            mutate(cfg)
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return p
    return build


def _set(section: str | None, key: str, value) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        (cfg if section is None else cfg.setdefault(section, {}))[key] = value
    return mutate


def _cfg_dir(dest, base):
    p = dest / "recipe.yaml"
    p.mkdir()
    return p


CONFIG_CASES = [
    Case("config-lr-fast", "config", "refuse", _config(_set("optimizer", "lr", "fast"))),
    Case("config-lr-null", "config", "refuse", _config(_set("optimizer", "lr", None))),
    Case("config-lr-negative", "config", "refuse", _config(_set("optimizer", "lr", -0.1))),
    Case("config-grad-clip-x", "config", "refuse", _config(_set("train", "grad_clip", "x"))),
    Case("config-seed-1.5", "config", "refuse", _config(_set(None, "seed", 1.5))),
    Case("config-embedding-dim-negative", "config", "refuse", _config(_set("model", "embedding_dim", -3))),
    Case("config-embedding-dim-big", "config", "refuse", _config(_set("model", "embedding_dim", "big"))),
    Case("config-keep-checkpoints-many", "config", "refuse", _config(_set("train", "keep_checkpoints", "many"))),
    Case("config-epochs-zero", "config", "refuse", _config(_set("train", "epochs", 0))),
    Case("config-batch-size-text", "config", "refuse", _config(_set("sampler", "batch_size", "lots"))),
    Case("config-unknown-loss", "config", "refuse", _config(_set("loss", "name", "arcfacez"))),
    Case("config-not-utf8", "config", "refuse", _config(text=b"name: caf\xe9\nseed: 0\n")),
    Case("config-a-list", "config", "refuse", _config(text="- a\n- b\n")),
    Case("config-not-yaml", "config", "refuse", _config(text="name: [unclosed\nseed: : :\n")),
    Case("config-empty", "config", "refuse", _config(text="")),
    Case("config-is-a-directory", "config", "refuse", _cfg_dir),
    Case("config-missing", "config", "refuse", lambda dest, base: dest / "missing.yaml"),
]


# ---- model artifacts (the toy model with one thing broken)
def _model(edit: Callable[[Path], None]) -> Callable[[Path, Base], Path]:
    def build(dest: Path, base: Base) -> Path:
        m = dest / "model"
        shutil.copytree(base.model, m)
        edit(m)
        return m
    return build


def _card_edit(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(m: Path) -> None:
        card = json.loads((m / "model_card.json").read_text())
        out = fn(card)
        (m / "model_card.json").write_text(json.dumps(card if out is None else out))
    return edit


def _no_backbone(card):
    del card["backbone"]


def _dim_mismatch(card):
    card["backbone"]["options"]["embedding_dim"] = 16
    card["embedding_dim"] = 16


def _unknown_backbone(card):
    card["backbone"]["name"] = "resnet-9000"


def _bad_input_size(card):
    card["preprocessing"]["input_size"] = "big"


def _truncate_weights(m):
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])


MODEL_CASES = [
    Case("model-card-without-backbone", "model", "refuse", _model(_card_edit(_no_backbone))),
    Case("model-card-dim-mismatch", "model", "refuse", _model(_card_edit(_dim_mismatch))),
    Case("model-card-unknown-backbone", "model", "refuse", _model(_card_edit(_unknown_backbone))),
    Case("model-card-bad-input-size", "model", "refuse", _model(_card_edit(_bad_input_size))),
    Case("model-card-a-list", "model", "refuse", _model(_card_edit(lambda card: [card]))),
    Case("model-card-not-json", "model", "refuse", _model(lambda m: (m / "model_card.json").write_text("{not json"))),
    Case("model-card-missing", "model", "refuse", _model(lambda m: (m / "model_card.json").unlink())),
    Case("model-weights-missing", "model", "refuse", _model(lambda m: (m / "model.safetensors").unlink())),
    Case("model-weights-truncated", "model", "refuse", _model(_truncate_weights)),
    Case("model-weights-garbage", "model", "refuse", _model(lambda m: (m / "model.safetensors").write_bytes(os.urandom(512)))),
    Case("model-path-is-a-file", "model", "refuse", lambda dest, base: _bytes(b"x", "model.bin")(dest, base)),
    Case("model-path-missing", "model", "refuse", lambda dest, base: dest / "no-such-model"),
]


# ---- galleries (the good gallery with one file broken)
def _gallery(edit: Callable[[Path], None]) -> Callable[[Path, Base], Path]:
    def build(dest: Path, base: Base) -> Path:
        g = dest / "people.gallery"
        shutil.copytree(base.gallery, g)
        edit(g)
        return g
    return build


def _segments(g: Path) -> list[Path]:
    return sorted(g.glob("vectors-*.npy"))


def _truncate_vectors(g):
    seg = _segments(g)[-1]
    seg.write_bytes(seg.read_bytes()[:-64])


def _reshape_vectors(g):
    seg = _segments(g)[-1]
    v = np.load(seg)
    np.save(seg, np.zeros((v.shape[0], v.shape[1] + 3), np.float32))


def _nan_vectors(g):
    seg = _segments(g)[-1]
    v = np.load(seg)
    v[0] = np.nan
    np.save(seg, v)


def _corrupt_db_page(g):
    db = g / "gallery.sqlite"
    data = bytearray(db.read_bytes())
    for i in range(100, min(len(data), 8192)):  # the header's tail and the first pages
        data[i] = 0xA5
    db.write_bytes(bytes(data))


def _db_garbage(g):
    (g / "gallery.sqlite").write_bytes(b"not a database" * 50)


GALLERY_CASES = [
    Case("gallery-vectors-missing", "gallery", "refuse", _gallery(lambda g: [s.unlink() for s in _segments(g)])),
    Case("gallery-vectors-truncated", "gallery", "refuse", _gallery(_truncate_vectors)),
    Case("gallery-vectors-wrong-shape", "gallery", "refuse", _gallery(_reshape_vectors)),
    Case("gallery-vectors-nan", "gallery", "refuse", _gallery(_nan_vectors)),
    Case("gallery-db-corrupt-page", "gallery", "refuse", _gallery(_corrupt_db_page)),
    Case("gallery-db-garbage", "gallery", "refuse", _gallery(_db_garbage)),
    Case("gallery-db-missing", "gallery", "refuse", _gallery(lambda g: (g / "gallery.sqlite").unlink())),
    Case("gallery-is-a-file", "gallery", "refuse", lambda dest, base: _bytes(b"x", "people.gallery")(dest, base)),
    Case("gallery-missing", "gallery", "refuse", lambda dest, base: dest / "no-such.gallery"),
]


# ---- embeddings files
def _emb(edit: Callable[[dict], dict | None]) -> Callable[[Path, Base], Path]:
    def build(dest: Path, base: Base) -> Path:
        with np.load(base.embeddings, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        out = edit(arrays)
        p = dest / "emb.npz"
        np.savez(p, **(arrays if out is None else out))
        return p
    return build


def _emb_nan(a):
    a["embeddings"] = a["embeddings"].copy()
    a["embeddings"][2] = np.nan


def _emb_rows(a):
    a["identities"] = a["identities"][:-1]


EMBEDDINGS_CASES = [
    Case("embeddings-random-bytes", "embeddings", "refuse", lambda dest, base: _bytes(os.urandom(300), "emb.npz")(dest, base)),
    Case("embeddings-empty-file", "embeddings", "refuse", lambda dest, base: _bytes(b"", "emb.npz")(dest, base)),
    Case("embeddings-truncated", "embeddings", "refuse",
         lambda dest, base: _bytes(base.embeddings.read_bytes()[:-200], "emb.npz")(dest, base)),
    Case("embeddings-wrong-keys", "embeddings", "refuse", _emb(lambda a: {"x": a["embeddings"]})),
    Case("embeddings-nan-row", "embeddings", "refuse", _emb(_emb_nan)),
    Case("embeddings-row-count-mismatch", "embeddings", "refuse", _emb(_emb_rows)),
    Case("embeddings-meta-not-json", "embeddings", "refuse", _emb(lambda a: {**a, "meta": np.array("{oops")})),
    Case("embeddings-missing", "embeddings", "refuse", lambda dest, base: dest / "none.npz"),
]


# ---- pairs files over the LFW-named good folder (2 folds of 3+3 pairs)
GOOD_PAIRS = (
    "2 3\n"
    "anna 1 2\nbert 1 2\ncarl 1 2\n"
    "anna 1 bert 1\nbert 2 carl 1\ncarl 2 anna 3\n"
    "anna 2 3\nbert 1 3\ncarl 1 2\n"
    "anna 3 bert 3\nbert 1 carl 2\ncarl 1 anna 1\n"
)


def _pairs(text: str | bytes, name: str = "pairs.txt") -> Callable[[Path, Base], Path]:
    return _bytes(text if isinstance(text, bytes) else text.encode(), name)


def _pairs_over(ext: str) -> Callable[[Path, Base], Path]:
    """The good pairs over their own LFW-named folder of ``.<ext>`` photos (the pairs file sits
    in that folder, which the runner then gives as ``--data``)."""
    def build(dest: Path, base: Base) -> Path:
        root = make_good_folder(dest / f"lfw-{ext}", ext=ext, lfw_names=True)
        return _pairs(GOOD_PAIRS)(root, base)
    return build


PAIRS_CASES = [
    Case("pairs-good", "pairs", "accept", _pairs(GOOD_PAIRS)),
    Case("pairs-over-png-photos", "pairs", "accept", _pairs_over("png")),
    Case("pairs-over-pgm-photos", "pairs", "accept", _pairs_over("pgm")),
    Case("pairs-wrong-columns", "pairs", "refuse", _pairs(GOOD_PAIRS.replace("anna 1 2\n", "anna 1 2 3 4 5\n"))),
    Case("pairs-non-numeric", "pairs", "refuse", _pairs(GOOD_PAIRS.replace("anna 1 2\n", "anna one two\n"))),
    Case("pairs-missing-photo", "pairs", "refuse", _pairs(GOOD_PAIRS.replace("anna 1 2\n", "anna 1 9\n"))),
    Case("pairs-unknown-person", "pairs", "refuse", _pairs(GOOD_PAIRS.replace("anna 1 bert 1", "anna 1 zoe 1"))),
    Case("pairs-bad-header", "pairs", "refuse", _pairs(GOOD_PAIRS.replace("2 3\n", "two three\n"))),
    Case("pairs-count-mismatch", "pairs", "refuse", _pairs(GOOD_PAIRS.replace("2 3\n", "2 4\n"))),
    Case("pairs-not-utf8", "pairs", "refuse", _pairs(GOOD_PAIRS.encode().replace(b"anna 1 2", b"ann\xe9 1 2"))),
    Case("pairs-empty", "pairs", "refuse", _pairs("")),
    Case("pairs-is-a-directory", "pairs", "refuse", lambda dest, base: _ph_dir(dest, base)),
]

CASES: list[Case] = PHOTO_CASES + FOLDER_CASES + CONFIG_CASES + MODEL_CASES + GALLERY_CASES + EMBEDDINGS_CASES + PAIRS_CASES


def build_base(root: Path, run: Callable[..., tuple[int, str, str]]) -> Base:
    """The good material (see :class:`Base`); ``run(*argv)`` runs the CLI in-process (used to
    enrol the good gallery and embed the good folder the way a user would)."""
    from tests.toy_faces import make_toy_model

    base = Base(root)
    base.model = make_toy_model(root / "toy-model")
    g = ref_grey()
    base.ref_png = _save(np.stack([g] * 3, -1), root / "ref" / "ref.png")
    base.ref_jpg = root / "ref" / "ref.jpg"
    base.ref_jpg.write_bytes(jpeg_bytes(np.stack([g] * 3, -1)))
    base.other = _save(np.stack([person_photo("zed", 0)] * 3, -1), root / "ref" / "other.png")
    base.folder = make_good_folder(root / "good")
    base.lfw = make_good_folder(root / "lfw", ext="jpg", lfw_names=True)
    base.gallery = root / "good.gallery"
    code, out, err = run("enroll", "--gallery", base.gallery, "--folder", base.folder, "--model", base.model, "--quiet")
    assert code == 0, err
    code, out, err = run("enroll", "--gallery", base.gallery, "--identity", "ref", base.ref_png, "--model", base.model, "--quiet")
    assert code == 0, err
    base.embeddings = root / "good.npz"
    code, out, err = run("embed", "--model", base.model, "--data", base.folder, "--out", base.embeddings, "--quiet")
    assert code == 0, err
    base.config = {
        "name": "hostile", "seed": 3,
        "data": {"name": "digits", "input_size": 8, "pairs_per_fold": 20},
        "model": {"name": "lenets++", "embedding_dim": 8, "widths": [4, 8, 8]},
        "loss": {"name": "softmax"},
        "sampler": {"name": "uniform", "batch_size": 64},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 1, "device": "cpu"},
    }
    return base


def build_case(case: Case, dest: Path, base: Base) -> Path:
    """Write ``case`` into the empty folder ``dest``; return the path the commands get."""
    dest.mkdir(parents=True, exist_ok=True)
    return case.build(dest, base)


__all__ = ["Base", "CASES", "Case", "build_base", "build_case", "unavailable"]
