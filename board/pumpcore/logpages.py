"""The `log` command: the event log's pages, streamed from its file (pumpcore.evread). Per call
(pumpcore.loader; the rule: docs/architecture.md, "Memory"), a module of its own: paging loads
only this and evread (not evlog's scan and compaction).
"""

from . import canon, proto

# bytes of events in one `log` answer (a frame is at most 1024 bytes): about half a frame, so
# that a long-running heap (fragmented) still has a block for the answer (issue 11, finding 8)
_LOG_BUDGET = 480


def log(app, args, now, req_id):
    since = args.get("since", 0)
    limit = args.get("limit", 20)
    if not isinstance(since, int) or not isinstance(limit, int) or limit < 1 or limit > 50:
        raise proto.CommandError(proto.BAD_ARGS, "since >= 0 and limit 1..50")
    # streamed from the log file; with the budget it parses no more lines than fit
    from . import evread

    evs, nxt, st = evread.since(app.events, since, limit, _LOG_BUDGET)
    if st is not None:
        app.events.load(st)  # where this page stopped: the next starts there
    # the answer must fit one frame (proto.MAX_LINE): stop early, `next` says where
    size = 0
    for i in range(len(evs)):
        size += len(canon.dumps(evs[i])) + 1
        if size > _LOG_BUDGET and i > 0:
            nxt = evs[i]["seq"]
            evs = evs[:i]
            break
    return {"events": evs, "next": nxt}
