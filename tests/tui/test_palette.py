"""The command palette (ctrl+p) carries lorabooth's own actions, and a theme picked there is
remembered and named like one picked with ctrl+t."""

from __future__ import annotations

from support import frozen_engine, wait_for
from textual.command import CommandPalette

from lorabooth.core.store import Store
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.panes.train import TrainPane
from lorabooth.tui.settings import UISettings
from lorabooth.tui.widgets.lossplot import LossPlot


async def palette_run(pilot, words: str, expect: str) -> None:
    app = pilot.app
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*words)
    await wait_for(pilot, lambda: [str(o.prompt).split("\n")[0]  # the name, then its help
                                   for o in app.screen.query_one("CommandList").options][:1]
                   == [expect])
    await pilot.press("down", "enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))


async def test_the_palette_finds_and_runs_lorabooth_actions(demo_workspace, engines):
    ws = demo_workspace()
    engines.append(ws)  # a queued job starts the engine; it must not outlive the test
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        await palette_run(pilot, "log scale", "Loss plot: toggle log scale")
        await wait_for(pilot, lambda: app.query(TrainPane)
                       and app.query_one(LossPlot).log_scale)
        assert app.query_one("#panes").active == "train"
        await palette_run(pilot, "start train", "Train: start training")
        await wait_for(pilot, lambda: [j.kind for j in Store(ws.db_path).jobs()] == ["train"])
        await palette_run(pilot, "model flux-schnell", "Workspace: use the model flux-schnell")
        app.writer.wait_idle()
        await wait_for(pilot, lambda: 'model = "flux-schnell"'
                       in (ws.root / "lorabooth.toml").read_text())


async def test_a_theme_picked_anywhere_is_remembered_and_named(demo_workspace, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("LORABOOTH_CONFIG_DIR", str(tmp_path / "ui"))  # others' settings stay
    ws = demo_workspace()
    app = LoraboothApp(ws.root, start_engine=False, poll=False)
    async with app.run_test(size=(100, 30)) as pilot:
        app.theme = "nord"  # what the palette's own "Theme" command does
        await pilot.pause()
        assert any("theme: nord" in n.message for n in app._notifications)
    assert UISettings.load().theme == "nord"


async def test_a_frozen_engine_is_told_once_and_restarted_from_the_palette(demo_workspace,
                                                                           engines, monkeypatch):
    """SIGSTOP the engine: the UI says it may be frozen (once, not at every poll) and names the
    way out; Engine: restart in the palette kills it and starts a fresh one."""
    from lorabooth.core.engine import client, running_pid

    ws = demo_workspace()
    engines.append(ws)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    with frozen_engine(ws, monkeypatch) as frozen:
        async with app.run_test(size=(100, 30)) as pilot:
            def told() -> list:
                return [n for n in app._notifications if "may be frozen" in n.message]

            await wait_for(pilot, told, timeout=30)
            await pilot.pause(1.0)  # several polls later: still said once
            assert len(told()) == 1 and "Engine: restart" in told()[0].message
            await palette_run(pilot, "engine restart", "Engine: restart")
            await wait_for(pilot, lambda: running_pid(ws) not in (None, frozen), timeout=60)
            await wait_for(pilot, lambda: any("a new engine started" in n.message
                                              for n in app._notifications), timeout=30)
            await wait_for(pilot, lambda: client.status(ws).state != client.UNRESPONSIVE)


async def test_a_full_disk_is_shown_and_not_taken_for_a_frozen_engine(demo_workspace, engines,
                                                                    monkeypatch):
    """An engine on a full disk cannot write its heartbeat: the status bar says how little
    space is left, and the toast says to free space, not to restart a working engine."""
    import shutil
    from collections import namedtuple

    from textual.widgets import Static

    ws = demo_workspace()
    engines.append(ws)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12, 3 * 2**20))
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    with frozen_engine(ws, monkeypatch):
        async with app.run_test(size=(100, 30)) as pilot:
            bar = app.query_one("#status", Static)
            await wait_for(pilot, lambda: "disk nearly full: 3 MiB free" in str(bar.render()))
            assert bar.has_class("-down")
            await wait_for(pilot, lambda: any("cannot write to the workspace" in n.message
                                              for n in app._notifications), timeout=30)
            assert not any("may be frozen" in n.message for n in app._notifications)


async def test_the_class_is_preserved_and_let_go_from_the_palette(demo_workspace):
    """train.preserve_class from the palette: written to lorabooth.toml, shown in the Train
    pane at once, and the palette then offers to turn it off."""
    from textual.widgets import Static

    ws = demo_workspace()
    app = LoraboothApp(ws.root, start_engine=False, poll=False,
                       settings=UISettings(images="halfcell"))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query(TrainPane))
        note = app.query_one("#train-config-note", Static)
        await palette_run(pilot, "preserve woman",
                          "Train: preserve the class woman (keep the subject off other women)")
        app.writer.wait_idle()
        await wait_for(pilot, lambda: "preserves 'woman'" in str(note.render()))
        assert 'preserve_class = "woman"' in (ws.root / "lorabooth.toml").read_text()
        await palette_run(pilot, "stop preserving", "Train: stop preserving the class woman")
        app.writer.wait_idle()
        await wait_for(pilot, lambda: "preserves" not in str(note.render()))
        assert 'preserve_class = ""' in (ws.root / "lorabooth.toml").read_text()


async def test_names_from_the_users_config_show_as_typed_in_the_palette(demo_workspace):
    """A preset's name is the user's words: "[/x]" would make Textual's markup raise and
    "[bold]" would vanish, were it read as markup."""
    from lorabooth.core.config import set_config_value

    ws = demo_workspace()
    set_config_value(ws.root, "generate.presets", {"[/x]": "{prompt}",
                                                   "[bold]loud[/bold]": "{prompt}!"})
    app = LoraboothApp(ws.root, start_engine=False, poll=False,
                       settings=UISettings(images="halfcell"))
    async with app.run_test(size=(120, 30)) as pilot:
        for words in ("", "preset"):  # discovery (nothing typed), then a search
            await pilot.press("ctrl+p")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
            await pilot.press(*words)

            def shown() -> list[str]:
                return [str(o.prompt).split("\n")[0]
                        for o in app.screen.query_one("CommandList").options]

            await wait_for(pilot, lambda: "Queue: a prompt with the preset [/x]" in shown())
            assert "Queue: a prompt with the preset [bold]loud[/bold]" in shown()
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
