"""Draws the demo photo set: "zorb", a round plush character, in varied outfits, backgrounds,
angles, sizes and light, each with a caption sidecar that uses the trigger word `zorb`.

Everything is drawn here with Pillow from a fixed seed, so the set is licence-clean and can be
made again byte for byte: `python sample_photos/make_photos.py`.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

TRIGGER = "zorb"
OUT = Path(__file__).resolve().parent
SCALE = 2  # drawn at twice the size, then downsampled: smooth edges without an AA renderer

# (file stem, outfit, background, light, size, orientation angle, mirrored)
SHOTS = [
    ("01_studio", None, "studio", "soft", (768, 768), 0, False),
    ("02_beach_scarf", "red scarf", "beach", "sunny", (832, 640), -8, False),
    ("03_forest_beanie", "blue beanie", "forest", "soft", (640, 832), 6, True),
    ("04_city_glasses", "sunglasses", "city", "overcast", (768, 768), -4, False),
    ("05_night_headphones", "pink headphones", "night", "dim", (832, 640), 10, True),
    ("06_room_bowtie", "green bow tie", "room", "warm", (640, 832), 0, False),
    ("07_park", None, "park", "sunny", (768, 768), 14, True),
    ("08_pastel_scarf", "yellow scarf", "pastel", "soft", (640, 832), -12, False),
    ("09_studio_beanie", "orange beanie", "studio_dark", "dramatic", (768, 768), 4, True),
    ("10_beach_glasses", "sunglasses", "beach", "golden", (832, 640), 0, True),
    ("11_city_headphones", "blue headphones", "city", "cool", (640, 832), -6, False),
    ("12_forest", None, "forest", "golden", (832, 640), 8, False),
    ("13_room_scarf", "purple scarf", "room", "soft", (768, 768), -10, True),
    ("14_night_beanie", "red beanie", "night", "neon", (640, 832), 3, False),
    ("15_park_bowtie", "red bow tie", "park", "overcast", (768, 768), -3, True),
    ("16_pastel", None, "pastel", "bright", (832, 640), 12, False),
]

BACKGROUND_WORDS = {
    "studio": "in a photo studio, plain gray backdrop",
    "studio_dark": "in a dark photo studio, black backdrop",
    "beach": "on a sunny beach, blue sky and sand",
    "forest": "in a green forest",
    "city": "on a city street, buildings behind",
    "night": "outdoors at night, starry sky",
    "room": "in a cosy living room",
    "park": "in a park on green grass",
    "pastel": "in front of a pink striped wall",
}
LIGHT_WORDS = {
    "soft": "soft light", "sunny": "bright sunlight", "overcast": "overcast light",
    "dim": "dim light", "warm": "warm lamp light", "dramatic": "dramatic side light",
    "golden": "golden hour light", "cool": "cool light", "neon": "neon light",
    "bright": "bright even light",
}
COLOURS = {
    "red": (206, 44, 52), "blue": (44, 92, 206), "green": (40, 150, 70),
    "yellow": (240, 196, 40), "pink": (236, 110, 170), "orange": (240, 130, 30),
    "purple": (130, 70, 190),
}


def vertical_gradient(size: tuple[int, int], top: tuple, bottom: tuple) -> Image.Image:
    h = size[1]
    column = Image.new("RGB", (1, h))
    for y in range(h):
        t = y / max(1, h - 1)
        rgb = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        column.putpixel((0, y), rgb)
    return column.resize(size)


def background(kind: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    w, h = size
    if kind == "studio":
        return vertical_gradient(size, (190, 190, 195), (120, 120, 128))
    if kind == "studio_dark":
        return vertical_gradient(size, (40, 40, 46), (10, 10, 12))
    if kind == "beach":
        img = vertical_gradient(size, (110, 170, 235), (190, 225, 250))
        d = ImageDraw.Draw(img)
        d.rectangle([0, int(h * 0.58), w, int(h * 0.66)], fill=(40, 120, 170))
        d.rectangle([0, int(h * 0.66), w, h], fill=(226, 204, 150))
        return img
    if kind == "forest":
        img = vertical_gradient(size, (150, 200, 150), (40, 90, 45))
        d = ImageDraw.Draw(img)
        for _ in range(9):
            x = rng.randint(0, w)
            tw = rng.randint(w // 40, w // 18)
            d.rectangle([x, 0, x + tw, h], fill=(rng.randint(60, 90), rng.randint(40, 60), 30))
        d.rectangle([0, int(h * 0.8), w, h], fill=(50, 100, 40))
        return img
    if kind == "city":
        img = vertical_gradient(size, (170, 190, 210), (210, 215, 220))
        d = ImageDraw.Draw(img)
        x = 0
        while x < w:
            bw, bh = rng.randint(w // 8, w // 4), rng.randint(h // 3, int(h * 0.9))
            shade = rng.randint(80, 150)
            d.rectangle([x, h - bh, x + bw, h], fill=(shade, shade, shade + 10))
            for wy in range(h - bh + 10, h - 10, 28 * SCALE):
                for wx in range(x + 8, x + bw - 12, 22 * SCALE):
                    d.rectangle([wx, wy, wx + 10 * SCALE, wy + 14 * SCALE], fill=(230, 220, 150))
            x += bw + rng.randint(2, 12)
        return img
    if kind == "night":
        img = vertical_gradient(size, (10, 14, 40), (30, 40, 80))
        d = ImageDraw.Draw(img)
        for _ in range(140):
            sx, sy, r = rng.randint(0, w), rng.randint(0, h), rng.choice([1, 2, 3])
            d.ellipse([sx, sy, sx + r, sy + r], fill=(255, 255, 230))
        return img
    if kind == "room":
        img = vertical_gradient(size, (214, 190, 160), (190, 160, 130))
        d = ImageDraw.Draw(img)
        d.rectangle([0, int(h * 0.72), w, h], fill=(120, 80, 50))
        d.rectangle([int(w * 0.08), int(h * 0.15), int(w * 0.32), int(h * 0.45)],
                    fill=(170, 210, 240), outline=(250, 250, 250), width=8 * SCALE)
        return img
    if kind == "park":
        img = vertical_gradient(size, (140, 200, 245), (200, 230, 250))
        d = ImageDraw.Draw(img)
        d.rectangle([0, int(h * 0.62), w, h], fill=(90, 170, 70))
        for _ in range(4):
            cx, cy, r = rng.randint(0, w), int(h * 0.55), rng.randint(w // 12, w // 7)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(50, 130, 50))
        return img
    img = Image.new("RGB", size, (245, 200, 215))  # pastel stripes
    d = ImageDraw.Draw(img)
    for x in range(0, w, 60 * SCALE):
        d.rectangle([x, 0, x + 25 * SCALE, h], fill=(250, 220, 230))
    return img


def draw_zorb(outfit: str | None, size: int) -> Image.Image:
    """The character on a transparent square canvas of `size` px."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size / 100.0

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * s, y0 * s, x1 * s, y1 * s]

    body, belly = (30, 170, 165), (150, 225, 215)
    for ax in (32, 68):  # antennae
        d.line(box(50, 30, ax, 8), fill=(20, 110, 105), width=int(2.2 * s))
        d.ellipse(box(ax - 4, 4, ax + 4, 12), fill=(250, 210, 40))
    d.ellipse(box(34, 84, 48, 94), fill=(240, 130, 30))  # feet
    d.ellipse(box(52, 84, 66, 94), fill=(240, 130, 30))
    d.ellipse(box(15, 20, 85, 90), fill=body, outline=(15, 95, 90), width=int(1.5 * s))
    d.ellipse(box(30, 52, 70, 86), fill=belly)
    for ex in (36, 60):  # eyes
        d.ellipse(box(ex - 9, 34, ex + 9, 54), fill=(255, 255, 255), outline=(20, 60, 60),
                  width=int(1 * s))
        d.ellipse(box(ex - 3, 40, ex + 5, 50), fill=(25, 25, 35))
        d.ellipse(box(ex, 41, ex + 3, 44), fill=(255, 255, 255))
    d.polygon([(44 * s, 56 * s), (56 * s, 56 * s), (50 * s, 64 * s)], fill=(245, 120, 40))
    d.arc(box(40, 60, 60, 74), 20, 160, fill=(20, 60, 60), width=int(1.5 * s))
    if outfit:
        _dress(d, outfit, box, s)
    return img


def _dress(d: ImageDraw.ImageDraw, outfit: str, box, s: float) -> None:
    colour_name, _, item = outfit.partition(" ")
    colour = COLOURS.get(colour_name, (30, 30, 30))
    if item == "scarf":
        d.rounded_rectangle(box(22, 68, 78, 78), radius=4 * s, fill=colour)
        d.rectangle(box(62, 74, 70, 92), fill=colour)
    elif item == "beanie":
        d.chord(box(18, 14, 82, 52), 180, 360, fill=colour)
        d.rectangle(box(18, 30, 82, 36), fill=tuple(min(255, c + 40) for c in colour))
        d.ellipse(box(45, 8, 55, 18), fill=(250, 250, 250))
    elif item == "headphones":
        d.arc(box(12, 14, 88, 70), 180, 360, fill=colour, width=int(4 * s))
        d.rounded_rectangle(box(8, 38, 20, 58), radius=3 * s, fill=colour)
        d.rounded_rectangle(box(80, 38, 92, 58), radius=3 * s, fill=colour)
    elif item == "bow tie":
        d.polygon([(50 * s, 78 * s), (38 * s, 72 * s), (38 * s, 84 * s)], fill=colour)
        d.polygon([(50 * s, 78 * s), (62 * s, 72 * s), (62 * s, 84 * s)], fill=colour)
        d.ellipse(box(47, 75, 53, 81), fill=colour)
    elif outfit == "sunglasses":
        for ex in (36, 60):
            d.rounded_rectangle(box(ex - 11, 36, ex + 11, 52), radius=4 * s, fill=(15, 15, 20))
        d.line(box(47, 42, 49, 42), fill=(15, 15, 20), width=int(2 * s))


def apply_light(img: Image.Image, light: str) -> Image.Image:
    bright = {"dim": 0.55, "dramatic": 0.8, "bright": 1.15, "sunny": 1.1}.get(light, 1.0)
    img = ImageEnhance.Brightness(img).enhance(bright)
    tint = {"warm": (255, 200, 140), "golden": (255, 190, 110), "cool": (150, 190, 255),
            "neon": (230, 90, 255), "overcast": (200, 205, 215)}.get(light)
    if tint:
        img = Image.blend(img, Image.new("RGB", img.size, tint), 0.18)
    if light == "dramatic":  # light from the left, falling off to the right
        w, h = img.size
        mask = Image.linear_gradient("L").rotate(90).resize((w, h))
        img = Image.composite(img, ImageEnhance.Brightness(img).enhance(0.35), mask)
    return img


def add_grain(img: Image.Image, rng: random.Random) -> Image.Image:
    noise = Image.effect_noise(img.size, 18).convert("RGB")
    return Image.blend(img, noise, 0.04 + rng.random() * 0.02)


def make_photo(index: int, shot: tuple) -> tuple[Image.Image, str]:
    _stem, outfit, bg, light, size, angle, mirror = shot
    rng = random.Random(1000 + index)
    big = (size[0] * SCALE, size[1] * SCALE)
    img = background(bg, big, rng)
    char_px = int(min(big) * rng.uniform(0.5, 0.78))
    zorb = draw_zorb(outfit, char_px).rotate(angle, resample=Image.BICUBIC, expand=True)
    if mirror:
        zorb = zorb.transpose(Image.FLIP_LEFT_RIGHT)
    x = int((big[0] - zorb.width) * rng.uniform(0.25, 0.75))
    y = int((big[1] - zorb.height) * rng.uniform(0.45, 0.85))
    shadow = Image.new("RGBA", zorb.size, (0, 0, 0, 0))
    ImageDraw.Draw(shadow).ellipse([zorb.width * 0.2, zorb.height * 0.85, zorb.width * 0.8,
                                    zorb.height * 0.98], fill=(0, 0, 0, 90))
    img.paste(shadow.filter(ImageFilter.GaussianBlur(6 * SCALE)), (x, y), shadow)
    img.paste(zorb, (x, y), zorb)
    img = img.resize(size, Image.LANCZOS)
    img = add_grain(apply_light(img, light), rng)
    dress = f", wearing {_article(outfit)}" if outfit else ""
    caption = (f"photo of {TRIGGER}, a round teal plush creature{dress}, "
               f"{BACKGROUND_WORDS[bg]}, {LIGHT_WORDS[light]}")
    return img, caption


def _article(phrase: str) -> str:
    return phrase if phrase.endswith("s") else ("an " if phrase[0] in "aeiou" else "a ") + phrase


def main() -> None:
    for index, shot in enumerate(SHOTS):
        img, caption = make_photo(index, shot)
        img.save(OUT / f"{shot[0]}.jpg", quality=88, optimize=True)
        (OUT / f"{shot[0]}.txt").write_text(caption + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in OUT.glob("*.jpg"))
    print(f"wrote {len(SHOTS)} photos, {total / 1e6:.2f} MB, to {OUT}")


if __name__ == "__main__":
    main()
