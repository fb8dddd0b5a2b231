"""What the engine does with volumes for both front ends: create with a driver check,
list with dockerd's filters, remove, prune. The store is storage/volumes.py; which
containers use a volume comes from their records."""

from __future__ import annotations

from kobako import errors
from kobako.storage.volumes import DRIVER, VolumeError, VolumeStore


class DriverNotFound(errors.NotFound, VolumeError):
    pass


def store(e) -> VolumeStore:
    return VolumeStore(e.root)


def create(e, name: str | None, driver: str | None = None, labels: dict | None = None,
           options: dict | None = None) -> dict:
    """A volume of the local driver; another driver is dockerd's 404 (no such plugin)."""
    driver = driver or DRIVER
    if driver != DRIVER:
        what = f"create {name}" if name else "create"
        raise DriverNotFound(f'{what}: error looking up volume plugin {driver}: plugin "{driver}" not found '
                             '(kobako has the "local" driver only)')
    if name is not None and not isinstance(name, str):
        raise VolumeError("invalid volume name: expected a string")
    for what, d in (("labels", labels), ("driver options", options)):
        if d is not None and not (isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                               for k, v in d.items())):
            raise VolumeError(f"invalid {what}: expected an object of strings")
    return store(e).create(name or None, labels or {}, options or {})


FILTERS = ("dangling", "driver", "label", "name")


def listing(e, flt: dict[str, list[str]]) -> list[dict]:
    """Volumes with dockerd's filters: name (a part of it), driver, label KEY[=VALUE],
    dangling (no container uses it)."""
    from kobako.engine import filters
    vols = store(e).list()
    dangling = filters.boolean(flt, "dangling")
    if dangling is not None:
        used = VolumeStore.in_use(e.containers.all())
        vols = [v for v in vols if (v["Name"] not in used) == dangling]
    if flt.get("driver"):
        vols = [v for v in vols if v.get("Driver", DRIVER) in flt["driver"]]
    if flt.get("name"):
        vols = [v for v in vols if any(s in v["Name"] for s in flt["name"])]
    if flt.get("label"):
        vols = [v for v in vols if filters.labels_match(v.get("Labels") or {}, flt["label"])]
    return vols


def remove(e, name: str, force: bool = False) -> None:
    store(e).remove(name, VolumeStore.users(e.containers.all(), name), force=force)


PRUNE_FILTERS = ("all", "label", "label!")


def prune(e, flt: dict[str, list[str]], all_volumes: bool = False) -> tuple[list[str], int]:
    """Unused volumes: anonymous ones, or every one with all_volumes / the `all` filter;
    narrowed by label and label!. Returns the names and the bytes freed."""
    from kobako.engine import filters
    every = all_volumes or bool(filters.boolean(flt, "all"))
    return store(e).prune(VolumeStore.in_use(e.containers.all()), all_volumes=every,
                          match=lambda vol: filters.labels_pass(vol.get("Labels") or {}, flt))
