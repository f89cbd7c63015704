"""The shell commands of docs/runbooks.md, as an operator copies them: every line of its ```sh
blocks (continuations joined, comments left out) and every inline code span that starts with a
command, each with the section it is in. tests/test_cluster.py runs them in the cluster."""

from __future__ import annotations

import re
from dataclasses import dataclass

# An inline span is a command when it starts with one of these and has arguments.
COMMANDS = ("kubectl", "$SERVER", "grep", "ls", "kill", "curl")
# A ```sh block line that sets a variable the other commands use (NODE, EXP, AGENT, SOCK, SERVER).
ASSIGNMENT = re.compile(r"^[A-Z]+=")
# What the runbooks run in the node debug pod's shell: the indented comment lines after a block's
# "# inside" comment, and inline commands that read the node's processes.
INSIDE, INSIDE_LINE = "# inside", "#   "
NODE_SHELL_WORDS = ("ls", "grep", "kill")


@dataclass(frozen=True)
class Command:
    section: str
    text: str
    in_debug_shell: bool = False

    @property
    def assignment(self) -> bool:
        return bool(ASSIGNMENT.match(self.text))


def _block_commands(section: str, block: str) -> list[Command]:
    commands: list[Command] = []
    current, inside = "", False
    for line in block.splitlines():
        stripped = line.strip()
        inside = stripped.startswith(INSIDE) or (inside and line.startswith(INSIDE_LINE))
        if inside and line.startswith(INSIDE_LINE):
            commands.append(Command(section, line[len(INSIDE_LINE) :].strip(), True))
            continue
        if not current and (not stripped or stripped.startswith("#")):
            continue
        piece = stripped.removesuffix("\\").strip()
        current = f"{current} {piece}" if current else piece
        if not stripped.endswith("\\"):
            commands.append(Command(section, current))
            current = ""
    return commands


def _inline_commands(section: str, prose: str) -> list[Command]:
    found = []
    for span in re.findall(r"`([^`]+)`", prose):
        text = " ".join(span.split())
        words = text.split()
        if len(words) > 1 and words[0] in COMMANDS:
            found.append(Command(section, text, words[0] in NODE_SHELL_WORDS))
    return found


def extract(markdown: str) -> list[Command]:
    """Every command, in the order the document gives them, each once."""
    commands: list[Command] = []
    for number, part in enumerate(re.split(r"(?m)^## ", markdown)):
        section = part.split("\n", 1)[0].strip() if number else "introduction"
        pieces = re.split(r"(?ms)^```(\w*)\n(.*?)^```\n", part)
        # re.split with two groups: prose, language, block, prose, language, block, ...
        commands += _inline_commands(section, pieces[0])
        for i in range(1, len(pieces), 3):
            if pieces[i] == "sh":
                commands += _block_commands(section, pieces[i + 1])
            commands += _inline_commands(section, pieces[i + 2])
    unique: dict[str, Command] = {}
    for command in commands:
        unique.setdefault(command.text, command)
    return list(unique.values())
