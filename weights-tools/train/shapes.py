"""The synthetic shapes world of the built-in model: vocabulary, captions, drawing, and the
colour check the evaluations use (Python here, Rust in tests/prompt_following.rs).

An image is 64×64: one shape (circle, square, triangle), centred (±1 px), on a plain
background. Captions: "a [small |large ]<colour> <shape>[ on a <colour> background]".
"""
import numpy as np

SIZE = 64
SHAPES = ["circle", "square", "triangle"]
# Named colours (RGB 0-255); the checks take the nearest of these.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 220, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 140, 20),
    "purple": (140, 40, 180),
}
COLOUR_NAMES = list(COLOURS)
SIZES = ["", "small", "large"]
# Half-extent s of the shape in pixels, by size word ("" = any size).
SIZE_RANGE = {"small": (11.0, 14.0), "": (11.0, 23.0), "large": (20.0, 23.0)}
MEDIUM_RANGE = (14.0, 20.0)


def article(word, swap=False):
    """ "an" before a vowel, else "a"; `swap` gives the other one (some captions do, so that
    either spelling works)."""
    an = word[0] in "aeiou"
    return "an" if an != swap else "a"


def caption(shape, colour, background, size="", swap=(False, False)):
    first = size or colour
    words = [article(first, swap[0])] + ([size] if size else []) + [colour, shape]
    if background is not None:
        words += ["on", article(background, swap[1]), background, "background"]
    return " ".join(words)


def draw(shape, colour, background, s, dx=0.0, dy=0.0, supersample=4):
    """An RGB float32 image in [0, 1], [64, 64, 3]: the shape of half-extent `s` centred at
    (32 + dx, 32 + dy), anti-aliased by supersampling."""
    n = SIZE * supersample
    c = (np.arange(n, dtype=np.float32) + 0.5) / supersample
    x, y = np.meshgrid(c - (SIZE / 2 + dx), c - (SIZE / 2 + dy))
    if shape == "circle":
        inside = x * x + y * y <= s * s
    elif shape == "square":
        h = 0.85 * s
        inside = (np.abs(x) <= h) & (np.abs(y) <= h)
    elif shape == "triangle":
        # Equilateral, pointing up, centroid at the centre; circumradius 1.4 s.
        r = 1.4 * s
        inside = y <= r / 2  # base
        for ang in (np.pi / 6, 5 * np.pi / 6):  # the two slanted edges' outward normals
            nx, ny = np.cos(ang), -np.sin(ang)
            inside &= x * nx + y * ny <= r / 2
    else:
        raise ValueError(shape)
    cov = inside.reshape(SIZE, supersample, SIZE, supersample).mean(axis=(1, 3))[..., None]
    fg = np.array(COLOURS[colour], np.float32) / 255
    bg = np.array(COLOURS[background], np.float32) / 255
    return (cov * fg + (1 - cov) * bg).astype(np.float32)


def sample(rng):
    """One random (image, caption). The background phrase is left out of 15 % of captions
    (the background is then any other colour); 10 % of articles are the ungrammatical one
    ("a orange"); sizes: 25 % small, 25 % large, 50 % unsaid."""
    shape = SHAPES[rng.integers(3)]
    colour = COLOUR_NAMES[rng.integers(8)]
    background = colour
    while background == colour:
        background = COLOUR_NAMES[rng.integers(8)]
    u = rng.random()
    size = "small" if u < 0.25 else "large" if u < 0.5 else ""
    lo, hi = SIZE_RANGE[size] if size else MEDIUM_RANGE
    s = rng.uniform(lo, hi)
    dx, dy = rng.uniform(-1, 1, 2)
    said_bg = background if rng.random() >= 0.15 else None
    swap = (bool(rng.random() < 0.1), bool(rng.random() < 0.1))
    return draw(shape, colour, background, s, dx, dy), caption(shape, colour, said_bg, size, swap)


def dataset(n, seed):
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(n):
        im, cap = sample(rng)
        images.append(im)
        captions.append(cap)
    return np.stack(images), captions


# ---- evaluation: the same definitions as tests/prompt_following.rs ----

def eval_prompts():
    """48 prompts covering every shape, colour, background colour and size: prompt i has
    shape i % 3, colour i % 8, background (i % 8 + 1 + (i // 8) % 7) % 8 (never the shape's
    colour), size (i // 3) % 3."""
    out = []
    for i in range(48):
        c = i % 8
        b = (c + 1 + (i // 8) % 7) % 8
        out.append((SHAPES[i % 3], COLOUR_NAMES[c], COLOUR_NAMES[b], SIZES[(i // 3) % 3]))
    return out


def nearest_colour(rgb):
    """The nearest named colour to a mean RGB in [0, 1] (Euclidean distance in 0-255 RGB)."""
    rgb = np.asarray(rgb, np.float64) * 255
    d = [((rgb - np.array(v)) ** 2).sum() for v in COLOURS.values()]
    return COLOUR_NAMES[int(np.argmin(d))]


def centre_mean(img):
    """Mean colour of the central 8×8 pixels."""
    return img[28:36, 28:36].reshape(-1, 3).mean(0)


def border_mean(img):
    """Mean colour of the 4-pixel border ring."""
    m = np.ones(img.shape[:2], bool)
    m[4:-4, 4:-4] = False
    return img[m].mean(0)


def repaint_colour(colour, background):
    """The colour an inpainting case asks for instead of `colour`: the first of colour + 3,
    + 4, ... (in COLOUR_NAMES order, cyclically) that is neither `colour` nor `background`."""
    i = COLOUR_NAMES.index(colour)
    for k in range(3, 11):
        c = COLOUR_NAMES[(i + k) % 8]
        if c not in (colour, background):
            return c
    raise AssertionError
