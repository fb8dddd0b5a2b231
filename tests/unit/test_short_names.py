"""Short names and the configuration's [registries] search list: the references a name
stands for (reference.candidates), the local lookup under each of them (ImageStore.resolve)
and the pull-side search (engine/images.search): the first registry with the image wins,
registry errors move on, and the error when none has it names every registry tried."""

from __future__ import annotations

from pathlib import Path

import pytest

from kobako import config, errors
from kobako.engine.images import search
from kobako.image import reference, registry
from kobako.image.store import ImageNotFound, ImageStore

DIGEST = "sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def private(tmp_path, monkeypatch):
    monkeypatch.setenv("KOBAKO_RUN", str(tmp_path / "run"))
    monkeypatch.delenv("KOBAKO_CONFIG_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config.reset()
    yield
    config.reset()


def search_list(tmp_path: Path, monkeypatch, *domains: str) -> None:
    p = tmp_path / "k.toml"
    p.write_text("[registries]\nsearch = [" + ", ".join(f'"{d}"' for d in domains) + "]\n")
    monkeypatch.setenv("KOBAKO_CONFIG_FILE", str(p))
    config.reset()


def names(refs: list[reference.Reference]) -> list[str]:
    return [str(r) for r in refs]


def test_without_a_search_list_short_names_are_docker_hubs():
    assert names(reference.candidates("busybox")) == ["docker.io/library/busybox:latest"]
    assert names(reference.candidates("me/app:1")) == ["docker.io/me/app:1"]


def test_a_search_list_gives_one_candidate_per_registry_in_order(tmp_path, monkeypatch):
    search_list(tmp_path, monkeypatch, "quay.io", "https://index.docker.io/v1/", "quay.io", "127.0.0.1:5000")
    assert reference.search_domains() == ["quay.io", "docker.io", "127.0.0.1:5000"]
    assert names(reference.candidates("busybox")) == [
        "quay.io/busybox:latest", "docker.io/library/busybox:latest", "127.0.0.1:5000/busybox:latest"]
    assert names(reference.candidates(f"x/app@{DIGEST}")) == [
        f"quay.io/x/app@{DIGEST}", f"docker.io/x/app@{DIGEST}", f"127.0.0.1:5000/x/app@{DIGEST}"]
    # a qualified name is itself only
    for qualified in ("localhost/app", "localhost:5000/app:1", "ghcr.io/a/b", "docker.io/library/busybox"):
        assert names(reference.candidates(qualified)) == [str(reference.parse(qualified))]
    assert reference.parse("busybox").domain == "quay.io"  # tag, push, commit: the first entry


def _store_with(tmp_path: Path, name: str) -> ImageStore:
    store = ImageStore(str(tmp_path / "root"))
    store.add({"id": DIGEST, "created": "2024-01-01T00:00:00Z"}, [name])
    return store


def test_local_lookup_tries_every_registry_of_the_list(tmp_path, monkeypatch):
    store = _store_with(tmp_path, "quay.io/x/busybox:latest")
    with pytest.raises(ImageNotFound, match=r"no such image: docker.io/x/busybox:latest"):
        store.resolve("x/busybox")  # no list: docker.io only
    search_list(tmp_path, monkeypatch, "docker.io", "quay.io")
    assert store.resolve("x/busybox")["id"] == DIGEST
    assert store.resolve("x/busybox:latest")["id"] == DIGEST
    search_list(tmp_path, monkeypatch, "docker.io", "ghcr.io")
    with pytest.raises(ImageNotFound):
        store.resolve("x/busybox")


def test_the_first_registry_of_the_list_found_locally_wins(tmp_path, monkeypatch):
    store = _store_with(tmp_path, "quay.io/busybox:latest")
    store.add({"id": "sha256:" + "b" * 64, "created": "2024-01-01T00:00:00Z"},
              ["docker.io/library/busybox:latest"])
    search_list(tmp_path, monkeypatch, "quay.io", "docker.io")
    assert store.resolve("busybox")["id"] == DIGEST
    search_list(tmp_path, monkeypatch, "docker.io", "quay.io")
    assert store.resolve("busybox")["id"] == "sha256:" + "b" * 64


def test_search_moves_past_registry_errors_to_the_first_that_has_it(tmp_path, monkeypatch):
    search_list(tmp_path, monkeypatch, "a.example", "b.example", "c.example")
    tried: list[str] = []

    def attempt(ref: reference.Reference) -> str:
        tried.append(ref.domain)
        if ref.domain == "a.example":
            raise registry.NotFound("registry a.example: manifest unknown: latest not found", 404)
        if ref.domain == "b.example":
            raise registry.RegistryError("registry b.example: connection refused")
        return "pulled"
    announced: list[str] = []
    ref, got = search("app", attempt, lambda r: announced.append(str(r)))
    assert (str(ref), got) == ("c.example/app:latest", "pulled")
    assert tried == ["a.example", "b.example", "c.example"] and len(announced) == 3


def test_when_none_has_it_the_error_names_each_registry(tmp_path, monkeypatch):
    search_list(tmp_path, monkeypatch, "a.example", "b.example")

    def missing(ref: reference.Reference) -> None:
        if ref.domain == "a.example":
            raise registry.Unauthorized(f"registry {ref.domain}: pull access denied", 401)
        raise registry.NotFound(f"registry {ref.domain}: manifest unknown", 404)
    with pytest.raises(errors.NotFound) as ei:
        search("app", missing)
    msg = errors.describe(ei.value)
    assert msg.startswith("app: no registry of the search list (a.example, b.example) gave the image:")
    assert "\n  * registry a.example: pull access denied" in msg
    assert "\n  * registry b.example: manifest unknown" in msg

    def one_down(ref: reference.Reference) -> None:
        if ref.domain == "a.example":
            raise registry.RegistryError("registry a.example: connection refused")
        raise registry.NotFound("registry b.example: manifest unknown", 404)
    with pytest.raises(errors.Unavailable, match="connection refused"):
        search("app", one_down)  # the image may be where we could not look: 503, not 404


def test_an_error_past_the_registry_stops_the_search(tmp_path, monkeypatch):
    search_list(tmp_path, monkeypatch, "a.example", "b.example")
    tried: list[str] = []

    def full_disk(ref: reference.Reference) -> None:
        tried.append(ref.domain)
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        search("app", full_disk)
    assert tried == ["a.example"]


def test_without_a_list_errors_are_the_registrys_own():
    def missing(ref: reference.Reference) -> None:
        raise registry.NotFound(f"registry {ref.domain}: manifest unknown", 404)
    with pytest.raises(registry.NotFound, match=r"^registry docker.io: manifest unknown$"):
        search("app", missing)
