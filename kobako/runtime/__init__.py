"""The OCI runtime: an OCI bundle (config.json + rootfs) becomes an isolated process.

Map of the modules, in the order a container is made:
  main.py        runc-compatible command line, dispatch to commands/<verb>.py
  spec.py        config.json: load, validate everything up front, `spec` defaults
  state.py       one directory per container under --root, JSON state, flock
  steps.py       the step/undo record every kernel object goes through (--debug)
  container.py   create / start / run / kill / delete: the parent's side
  init.py        the child's side: namespaces, then rootfs, then the process
  rootfs.py      mounts, devices, pivot_root, masked and read-only paths
  process.py     rlimits, user, capabilities, no_new_privs, exec
  cgroups/       the container's cgroup on v1, v2 and hybrid hosts
  hooks.py       the six OCI hook kinds, state on stdin
  console.py     pty master sent over --console-socket (SCM_RIGHTS)
Imports stay lazy and small: `kobako-runtime run` is measured against runc.
"""
