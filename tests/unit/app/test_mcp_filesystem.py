"""The filesystem MCP server's sandbox (storage/files.py): hostile paths refused before any I/O,
symlinks never followed, sizes bounded, writes atomic."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.mcp_servers.filesystem import tools as filesystem_tools
from app.mcp_servers.registry import schema_errors
from storage import files as files_module
from storage.files import FileError, PathRefused, WorkspaceFiles, split_path

HOSTILE = [
    "../secret.txt",
    "a/../../secret.txt",
    "..",
    "/etc/passwd",
    "//etc/passwd",
    "~/secret.txt",
    "C:secret.txt",
    "c:\\windows\\win.ini",
    "..\\secret.txt",
    "a\x00.txt",
    "%2e%2e/secret.txt",
    "%2e%2e%2fsecret.txt",
    "..%2fsecret.txt",
    "%252e%252e/secret.txt",
    "%2fetc/passwd",
    "\uff0e\uff0e/secret.txt",
    "a/\u2025/secret.txt",
    "a\nb",
    "x/" * 40 + "y",
    "a" * 300,
]


@pytest.fixture
def sandbox(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("do not read")
    return WorkspaceFiles(tmp_path / "root" / "1", max_file_bytes=1000, max_entries=3), tmp_path


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_path_is_refused_as_text(path):
    with pytest.raises(PathRefused):
        split_path(path)


@given(st.text(alphabet=st.sampled_from(list("ab./%2e\\\x00\uff0e")), max_size=12))
@settings(max_examples=500)
def test_no_accepted_path_has_a_parent_or_absolute_component(path):
    try:
        parts = split_path(path)
    except PathRefused:
        return
    assert all(p not in ("..", ".", "") and "\\" not in p and "\x00" not in p for p in parts)
    assert not path.startswith("/")


# Both directions: what a caller ordinarily names is accepted (as these components), what could
# leave the root is refused. A guard that refused everything would pass the hostile half alone.
PATHS = [
    ("notes.txt", ["notes.txt"]),
    ("notes/2024/january.md", ["notes", "2024", "january.md"]),
    ("notes/", ["notes"]),
    ("./notes.txt", ["notes.txt"]),
    ("a//b", ["a", "b"]),
    ("", []),
    (".", []),
    (".hidden", [".hidden"]),
    ("...", ["..."]),
    ("a..b/c", ["a..b", "c"]),
    ("report v2 (final).txt", ["report v2 (final).txt"]),
    ("100%", ["100%"]),
    ("caf\u00e9/na\u00efve.txt", ["caf\u00e9", "na\u00efve.txt"]),
    ("x/" * 31 + "y", ["x"] * 31 + ["y"]),
    ("a" * 200, ["a" * 200]),
    *[(path, PathRefused) for path in HOSTILE],
]


@pytest.mark.parametrize(("path", "expected"), PATHS)
def test_ordinary_paths_are_accepted_and_hostile_ones_refused(path, expected):
    if expected is PathRefused:
        with pytest.raises(PathRefused):
            split_path(path)
    else:
        assert split_path(path) == expected


@pytest.mark.parametrize("path", [path for path, expected in PATHS if expected is not PathRefused and expected])
def test_an_ordinary_path_is_written_and_read_back_inside_the_root(sandbox, path):
    files, tmp = sandbox
    assert files.write(path, b"content") is True
    assert files.read(path) == b"content"
    assert (files.root.joinpath(*split_path(path))).read_bytes() == b"content"
    assert (tmp / "secret.txt").read_text() == "do not read"


NAME_CHARS = st.characters(codec="utf-8", categories=("L", "N"), include_characters="-_ .,")


@given(st.lists(st.text(NAME_CHARS, min_size=1, max_size=20), min_size=1, max_size=8))
@settings(max_examples=300)
def test_any_relative_path_of_plain_names_is_accepted_as_written(names):
    names = [n for n in names if n.strip(".") or len(n) > 2]  # "." and ".." are not plain names
    assert split_path("/".join(names)) == names


# What a client ordinarily sends the tools: plain ASCII names (the schema admits no other characters).
TOOL_PATHS = [
    "notes.txt",
    "notes/2024/january.md",
    "notes/",
    "./notes.txt",
    ".hidden",
    "...",
    "a..b/c",
    "report v2 (final).txt",
    "x/" * 31 + "y",
    "a" * 200,
]


@pytest.mark.parametrize("tool", filesystem_tools(max_file_bytes=1000), ids=lambda tool: tool.name)
def test_the_tools_schema_admits_ordinary_paths_and_refuses_hostile_ones(tool):
    """The gateway checks a path against the tool's schema before storage/files.py sees it."""

    def errors(path: str) -> dict:
        arguments = {"path": path} | ({"content": ""} if tool.name == "write_file" else {})
        return schema_errors(tool.input_schema, arguments)

    for path in TOOL_PATHS:
        assert errors(path) == {}, path
        assert split_path(path)  # and the sandbox takes what the schema let through
    for path in HOSTILE:
        assert set(errors(path)) == {"arguments.path"}, path


def test_symlink_inside_root_pointing_out_is_not_followed(sandbox):
    files, tmp = sandbox
    files.write("ok.txt", b"fine")
    os.symlink(tmp / "secret.txt", files.root / "link.txt")
    os.symlink(tmp, files.root / "dirlink")
    with pytest.raises(PathRefused):
        files.read("link.txt")
    with pytest.raises(PathRefused):
        files.read("dirlink/secret.txt")
    with pytest.raises(PathRefused):
        files.write("dirlink/new.txt", b"x")
    assert not (tmp / "new.txt").exists()


def test_writing_over_a_symlink_is_refused_and_its_target_untouched(sandbox):
    files, tmp = sandbox
    files.root.mkdir(parents=True)
    os.symlink(tmp / "secret.txt", files.root / "link.txt")
    with pytest.raises(PathRefused):
        files.write("link.txt", b"new")
    assert (tmp / "secret.txt").read_text() == "do not read"
    assert os.path.islink(files.root / "link.txt")


def test_write_creates_parents_and_replaces_whole_file(sandbox):
    files, _ = sandbox
    assert files.write("a/b/c.txt", b"one") is True
    assert files.write("a/b/c.txt", b"two!") is False
    assert files.read("a/b/c.txt") == b"two!"
    assert sorted(os.listdir(files.root / "a" / "b")) == ["c.txt"]  # no temporary file left behind


def test_sizes_are_bounded(sandbox):
    files, _ = sandbox
    with pytest.raises(FileError):
        files.write("big.txt", b"x" * 1001)
    (files.root).mkdir(parents=True, exist_ok=True)
    (files.root / "big.txt").write_bytes(b"x" * 1001)
    with pytest.raises(FileError):
        files.read("big.txt")
    for name in "abcde":
        files.write(name, b"")
    entries, truncated = files.list_dir("")
    assert [e.name for e in entries] == ["a", "b", "big.txt"] and truncated


def test_missing_file_and_directory_are_file_errors(sandbox):
    files, _ = sandbox
    with pytest.raises(FileError):
        files.read("nope.txt")
    with pytest.raises(FileError):
        files.list_dir("nope")
    files.write("d/x.txt", b"")
    with pytest.raises(FileError):
        files.write("d", b"over a directory")
    with pytest.raises(FileError):
        files.read("d")


def test_names_are_bounded_in_bytes_not_characters(sandbox):
    files, _ = sandbox
    with pytest.raises(PathRefused, match="bytes"):
        split_path("\u00e9" * 150)  # 150 characters, 300 bytes: past what Linux allows in one name
    with pytest.raises(PathRefused):
        files.write("\u00e9" * 150, b"x")
    assert split_path("\u00e9" * 100) == ["\u00e9" * 100]
    assert files.write("\u00e9" * 100, b"x") is True


def test_unpaired_surrogates_are_refused_as_text():
    with pytest.raises(PathRefused):
        split_path("a\udcff.txt")


@pytest.mark.parametrize(
    "operation",
    [
        lambda files, name: files.write(name, b"x"),
        lambda files, name: files.write(f"{name}/inner.txt", b"x"),
        lambda files, name: files.read(name),
        lambda files, name: files.list_dir(name),
    ],
)
def test_a_name_the_kernel_refuses_is_a_refused_path_not_an_io_failure(sandbox, monkeypatch, operation):
    # Past the text check (a file system may allow fewer bytes than it does): ENAMETOOLONG from
    # the kernel itself is still the caller's bad path, 422, not an outage.
    monkeypatch.setattr(files_module, "MAX_NAME", 1000)
    files, _ = sandbox
    with pytest.raises(PathRefused, match="refuses the name"):
        operation(files, "n" * 300)


def test_an_io_failure_that_is_not_about_the_name_stays_an_os_error(tmp_path):
    (tmp_path / "root").write_text("a file where the workspace directory should be")
    files = WorkspaceFiles(tmp_path / "root" / "1", max_file_bytes=1000, max_entries=3)
    with pytest.raises(NotADirectoryError):  # an OSError: app/http/errors.py answers 503
        files.write("a.txt", b"x")
