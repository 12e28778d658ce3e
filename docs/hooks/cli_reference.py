"""MkDocs hook: replaces ``<!-- cli-reference -->`` with every ``advseg`` command's help.

The text is what ``advseg COMMAND --help`` prints (``Usage: advseg COMMAND ...``), so the page
cannot drift from the code.
"""

from __future__ import annotations

import click

MARKER = "<!-- cli-reference -->"


def _commands(group: click.Group, path: list[str]):
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            yield from _commands(command, path + [name])
        else:
            yield path + [name], command


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    from click.testing import CliRunner

    from keras_advseg.cli import main

    sections = []
    for path, _ in _commands(main, []):
        text = (
            CliRunner()
            .invoke(main, [*path, "--help"], prog_name="advseg", terminal_width=100)
            .output
        )
        sections.append(f"### advseg {' '.join(path)}\n\n```text\n{text.rstrip()}\n```\n")
    return markdown.replace(MARKER, "\n".join(sections))
