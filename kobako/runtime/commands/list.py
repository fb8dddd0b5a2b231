"""kobako-runtime list: the containers under --root, as a table or JSON."""

from kobako.runtime import jsonfast, state
from kobako.runtime.errors import RuntimeFailure


def run(args, log) -> int:
    if args.format not in ("table", "json"):
        raise RuntimeFailure(f"unknown --format {args.format!r}", "use table or json")
    rows = []
    for cid in state.ids(args.root):
        try:
            rows.append(state.open_existing(args.root, cid, lock=False).public())
        except RuntimeFailure:
            continue  # deleted while we looked
    if args.quiet:
        print("\n".join(r["id"] for r in rows))
    elif args.format == "json":
        print(jsonfast.dumps(rows))
    else:
        head = ("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")
        table = [head] + [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], "root")
                          for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        for row in table:
            print("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0
