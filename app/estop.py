"""``closedloop estop``: emergency stop from the command line, straight to the device or through the daemon.

Two paths (pick the one that owns the device):

``closedloop estop --api [URL]``
    ``POST /api/estop`` to a running daemon (default ``http://127.0.0.1:8765``; bearer token from
    ``--token-file`` or ``$CLOSEDLOOP_TOKEN``). The daemon e-stops its session: device ESTOP first,
    then the SafetySupervisor's latched fault. Use this while a daemon (or GUI) owns the port.
``closedloop estop --port PORT``
    Opens the stimulator box's serial port itself and sends ESTOP, then reads STATUS back and
    exits 0 only if the device reports every output off with the ESTOP fault latched. Use this
    when no host process owns the port (a crashed or hung host: the device watchdog has already
    turned outputs off within 100 ms, and this latches the fault for the record). A serial port
    has one owner: while a session holds it, use ``--api``.

Both print one JSON object (``--json``) or a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["add_estop_parser", "cmd_estop", "estop_api", "estop_port"]

DEFAULT_API = "http://127.0.0.1:8765"


def estop_port(port: str, *, timeout_s: float = 0.2) -> dict[str, Any]:
    """Send ESTOP to the stimulator box on ``port`` and read its state back.

    Parameters
    ----------
    port : str
        Serial port (or the pty path ``stimbox-sim`` printed).
    timeout_s : float
        Per-command reply timeout, s.

    Returns
    -------
    dict
        ``via``, ``port``, ``ack_ms`` (ESTOP queued -> ACK decoded, host clock), ``state``,
        ``fault``, ``outputs`` (bit mask; 0 = every output off), ``ok``.

    Raises
    ------
    StimulatorError
        When the port cannot be opened or the device does not answer.
    """
    from stimulation.serial_stimulator import SerialStimulator

    with SerialStimulator(port, timeout_s=timeout_s) as stim:
        t0 = time.monotonic()
        stim.estop()
        ack_ms = (time.monotonic() - t0) * 1000.0
        st = stim.stimulator_status()
    return {
        "via": "serial",
        "port": port,
        "ack_ms": ack_ms,
        "state": st.state,
        "fault": st.fault,
        "outputs": st.outputs,
        "ok": st.outputs == 0 and st.fault == "estop",
    }


def estop_api(url: str = DEFAULT_API, token: str | None = None, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """``POST {url}/api/estop`` and return the daemon's answer plus the round-trip time.

    Raises
    ------
    RuntimeError
        When the daemon cannot be reached or answers with an error status (message included).
    """
    req = urllib.request.Request(url.rstrip("/") + "/api/estop", data=b"{}", method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"daemon at {url} refused the e-stop: HTTP {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"cannot reach the daemon at {url} ({exc}); is it running? Try --port instead.") from exc
    rtt_ms = (time.monotonic() - t0) * 1000.0
    state = body.get("safety", {}).get("state")
    return {"via": "api", "url": url, "rtt_ms": rtt_ms, "previous": body.get("previous"), "state": state, "ok": True}


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        path = Path(args.token_file)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RuntimeError(f"--token-file {str(path)!r} cannot be read: {exc}") from exc
    return os.environ.get("CLOSEDLOOP_TOKEN")


def cmd_estop(args: argparse.Namespace) -> int:
    """``closedloop estop``: exit 0 when the e-stop was confirmed, 1 otherwise."""
    if args.port:
        out = estop_port(args.port, timeout_s=args.timeout)
    else:
        out = estop_api(args.api or DEFAULT_API, _token(args), timeout_s=max(args.timeout, 1.0))
    if args.json:
        print(json.dumps(out))
    elif out["via"] == "serial":
        print(
            f"e-stop {'confirmed' if out['ok'] else 'NOT confirmed'} on {out['port']}: state {out['state']}, "
            f"fault {out['fault']}, outputs 0x{out['outputs']:02x}, ACK in {out['ack_ms']:.1f} ms"
        )
    else:
        print(f"e-stop sent to {out['url']}: {out['previous']} -> {out['state']} in {out['rtt_ms']:.1f} ms")
    return 0 if out["ok"] else 1


def add_estop_parser(sub: Any) -> None:
    """Add the ``estop`` subcommand to ``closedloop``'s subparsers."""
    es = sub.add_parser("estop", help="emergency stop: straight to the stimulator (--port) or via the daemon (--api)")
    where = es.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial port of the stimulator box (when no session owns it)")
    where.add_argument("--api", nargs="?", const=DEFAULT_API, help=f"daemon base URL (default {DEFAULT_API})")
    es.add_argument("--token-file", help="file holding the daemon's bearer token (else $CLOSEDLOOP_TOKEN)")
    es.add_argument("--timeout", type=float, default=0.2, help="reply timeout in s (default 0.2)")
    es.add_argument("--json", action="store_true", help="print one JSON object")
    es.set_defaults(func=cmd_estop)
