"""The half-cell preview keeps a picture's shape: fitted into its box and centred, never
stretched to the box; and showing the next picture repaints it in place."""

from __future__ import annotations

from PIL import Image
from textual.app import App

from lorabooth.tui.widgets.halfcell import HalfcellImage
from lorabooth.tui.widgets.preview import Preview


class OnePreview(App):
    CSS = "Preview { width: 40; height: 20; }"

    def compose(self):
        yield Preview("halfcell")


def picture(path, size) -> str:
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def drawn(widget: HalfcellImage) -> list[str]:
    """The widget's lines as the screen gets them."""
    return [widget.render_line(y).text for y in range(widget.size.height)]


async def test_a_wide_picture_is_letterboxed_and_the_next_one_replaces_it(tmp_path):
    wide = picture(tmp_path / "wide.png", (800, 200))  # 4:1
    tall = picture(tmp_path / "tall.png", (200, 400))  # 1:2
    app = OnePreview()
    async with app.run_test(size=(60, 30)) as pilot:
        preview = app.query_one(Preview)
        preview.show(wide)
        await pilot.pause()
        widget = app.query_one(HalfcellImage)
        assert (widget.size.width, widget.size.height) == (40, 20)  # the whole box
        lines = drawn(widget)
        rows = [line for line in lines if "▀" in line]
        # 40 cells wide is 40 x 80 pixels of height 2: a 4:1 picture takes 5 rows, centred.
        assert len(rows) == 5 and all(r.count("▀") == 40 for r in rows)
        assert lines.index(rows[0]) == (20 - 5) // 2
        preview.show(tall)
        await pilot.pause()
        assert app.query_one(HalfcellImage) is widget  # repainted, not mounted anew
        rows = [line for line in drawn(widget) if "▀" in line]
        # 20 rows are 40 pixels high: a 1:2 picture is 20 cells wide, centred.
        assert len(rows) == 20 and all(r.count("▀") == 20 for r in rows)
        assert all(r.index("▀") == 10 for r in rows)


async def test_a_phone_portrait_stored_sideways_shows_upright(tmp_path):
    """A phone stores a portrait as a landscape JPEG with EXIF orientation 6; training turns
    it upright (dataset/files.py), and so must the preview: tall, its top (red) at the top."""
    stored = Image.new("RGB", (400, 200), (30, 30, 200))
    stored.paste((200, 30, 30), (0, 0, 200, 200))  # the left half: the picture's top, once turned
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise: the stored left edge at the top
    path = tmp_path / "portrait.jpg"
    stored.save(path, exif=exif, quality=95)
    app = OnePreview()
    async with app.run_test(size=(60, 30)) as pilot:
        preview = app.query_one(Preview)
        preview.show(path)
        await pilot.pause()
        widget = app.query_one(HalfcellImage)
        rows = [line for line in drawn(widget) if "▀" in line]
        # Upright it is 1:2, so 20 rows of 20 cells (a sideways one would be 10 rows of 40).
        assert len(rows) == 20 and all(r.count("▀") == 20 for r in rows)
        top = list(widget.render_line(0))
        bottom = list(widget.render_line(19))
        colour = next(s.style.color.triplet for s in top if s.text.strip())
        assert colour.red > 150 and colour.blue < 100, colour  # red at the top
        colour = next(s.style.color.triplet for s in bottom if s.text.strip())
        assert colour.blue > 150 and colour.red < 100, colour
