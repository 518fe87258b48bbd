"""Summary line -> extended description pairs from the docstrings of scientific PyPI packages.

The source files are parsed with ``ast``, never imported: nothing runs, and a module that needs an
optional dependency is read like any other. A docstring gives a pair when, after its first
paragraph (the summary), it has prose before its first section ("Parameters", "Examples", ...) or
doctest; that prose is the passage. Tests, benchmarks and private modules are skipped: their
docstrings describe test cases, not the science.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re

# "Parameters\n----------", "Explanation\n===========": a section header underlined
_UNDERLINE = re.compile(r"^\s*([-=~^*])\1{2,}\s*$")
_SKIP_DIRS = {"tests", "test", "testing", "benchmarks", "_vendor", "_lib", "externals", "vendored"}
# reST markup that the teacher would read as noise: roles, literals, citations
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]*)`")
_LITERAL = re.compile(r"`{1,2}([^`]*)`{1,2}")
_CITATION = re.compile(r"\s*\[[0-9a-zA-Z#]+\]_")


def plain(text: str) -> str:
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", _CITATION.sub("", text)))


def package_root(package: str) -> str | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def source_files(root: str):
    """The package's .py files in a fixed order, test and private folders left out."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(("_", ".")))
        for name in sorted(files):
            if name.endswith(".py") and "test" not in name:
                yield os.path.join(folder, name)


def split_docstring(doc: str):
    """(summary, description) of a docstring, or None when it has no prose after its summary."""
    paragraphs, current = [], []
    lines = doc.expandtabs().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if stripped.startswith((">>>", "..", ":")) or _UNDERLINE.match(following) or _UNDERLINE.match(line):
            break  # a section, a doctest, a directive or a field list: the prose is over
        if stripped:
            current.append(stripped)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    if len(paragraphs) < 2:
        return None
    # prose paragraphs only: a line of code or a list of names ends the description
    description = []
    for paragraph in paragraphs[1:]:
        if paragraph.endswith("::"):
            description.append(paragraph[:-1])
            break
        description.append(paragraph)
    return plain(paragraphs[0]), plain(" ".join(description))


def read_pairs(packages):
    """(summary, description, origin) of every qualifying docstring in ``packages``."""
    for package in packages:
        root = package_root(package)
        if root is None:
            raise FileNotFoundError(f"package {package!r} is not installed (pip install it first)")
        for path in source_files(root):
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), filename=path)
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            module = ".".join([package, *os.path.relpath(path, root)[:-3].split(os.sep)])
            module = module[:-len(".__init__")] if module.endswith(".__init__") else module
            nodes = [tree] + [n for n in ast.walk(tree)
                              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            for node in nodes:
                if not isinstance(node, ast.Module) and node.name.startswith("_"):
                    continue
                doc = ast.get_docstring(node, clean=True)
                parts = split_docstring(doc) if doc else None
                if parts is not None:
                    name = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                    yield parts[0], parts[1], f"pypi-doc:{name}"
