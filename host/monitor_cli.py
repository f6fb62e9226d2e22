"""``t2q monitor``: a live dashboard of a device reached over UDP, with a Prometheus endpoint.

Thin glue over :mod:`.monitor` (figures, alerts, exposition text, the dashboard), a
:class:`~.device.Device` on a control-only :class:`~.transport.UdpTransport`, an optional
listener for the twin's tap (PnL, positions, active symbols) and :class:`PrometheusServer`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click

from .device import Device
from .monitor import Ledger, Thresholds, alerts, dashboard, figures, prometheus_text, take_reading
from .transport import DeviceTimeout, UdpTransport

__all__ = ["PrometheusServer", "monitor", "load_description"]

#: The content type of the Prometheus text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SUBSCRIPTION_EVERY = 10.0  # seconds between reads of the subscription window


class PrometheusServer:
    """Serves the latest exposition text at ``/metrics`` over HTTP, from a daemon thread.

    Binds ``host`` (loopback by default) and ``port`` (0: a free one, see :attr:`address`);
    :attr:`text` is what the next scrape gets.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.text = ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server hook name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = server.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return self._httpd.server_address[:2]

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def load_description(path: str | Path) -> dict:
    """A register description from a JSON file: the description itself, or a twin build's
    ``built.json`` (its ``describe`` member)."""
    data = json.loads(Path(path).read_text())
    return data.get("describe", data) if "registers" not in data else data


class _Tap:
    """The twin's tap: a loopback socket whose datagrams feed a :class:`Ledger`."""

    def __init__(self, port: int, ledger: Ledger):
        self.ledger = ledger
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)

    def drain(self) -> None:
        while True:
            try:
                self.ledger.on_tap(self.sock.recv(65535))
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


def _token(token: str | None, token_file: str | None, twin_build: str | None) -> int:
    if token is not None:
        return int(token, 0)
    path = token_file or (Path(twin_build) / "token" if twin_build else None)
    if path is not None and Path(path).exists():
        return int(Path(path).read_text().strip(), 0)
    return 0


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The device's address.")
@click.option("--control-port", type=int, required=True, help="The device's control port.")
@click.option("--description", type=click.Path(exists=True, dir_okay=False),
              help="Register description (JSON, or a twin build's built.json).")  # fmt: skip
@click.option("--twin-build", type=click.Path(exists=True, file_okay=False),
              help="A twin build directory: description and token from it.")  # fmt: skip
@click.option("--token", default=None, help="Session token (decimal or 0x hex).")
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the token.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between readings.")
@click.option("--timeout", default=0.2, show_default=True, help="Control request timeout (s).")
@click.option("--tap", "tap_port", type=int, default=None,
              help="Listen for the twin's tap on 127.0.0.1:PORT (PnL, positions).")  # fmt: skip
@click.option("--prometheus", "prom_port", type=int, default=None,
              help="Serve Prometheus text at http://HOST:PORT/metrics.")  # fmt: skip
@click.option("--prometheus-host", default="127.0.0.1", show_default=True)
@click.option("--p99-ns", type=float, default=5_000.0, show_default=True, help="Latency alert.")
@click.option("--max-loss", type=float, default=10_000.0, show_default=True, help="Dollars.")
@click.option("--max-position", type=int, default=5_000, show_default=True, help="Shares.")
@click.option("--max-message-rate", type=float, default=None, help="Overload above (msgs/s).")
@click.option("--max-drops", type=int, default=0, show_default=True, help="Per interval.")
@click.option("--count", type=int, default=None, help="Stop after this many readings.")
def monitor(
    host,
    control_port,
    description,
    twin_build,
    token,
    token_file,
    interval,
    timeout,
    tap_port,
    prom_port,
    prometheus_host,
    p99_ns,
    max_loss,
    max_position,
    max_message_rate,
    max_drops,
    count,
):
    """Live dashboard of a device (board or twin): latency, orders, fills, PnL, drops, alerts.

    With --count the last dashboard is printed and the exit status is 1 if an alert was raised.
    """
    from rich.console import Console
    from rich.live import Live

    if description is None and twin_build is None:
        raise click.UsageError("give --description or --twin-build")
    desc = load_description(description or Path(twin_build) / "built.json")
    limits = Thresholds(p99_ns, max_loss, max_position, max_message_rate, max_drops)
    transport = UdpTransport(host, {"control": control_port}, timeout=timeout)
    device = Device(transport, desc, token=_token(token, token_file, twin_build))
    server = PrometheusServer(prom_port, prometheus_host) if prom_port is not None else None
    tap = None
    console = Console()
    try:
        if tap_port is not None:
            ports = device.read_registers(["order_port", "tob_port", "feed_port0"])
            ledger = Ledger(ports["order_port"], ports["tob_port"], ports["feed_port0"] & 0xFFFF)
            tap = _Tap(tap_port, ledger)
        if server is not None:
            console.print(f"Prometheus text at http://{server.address[0]}:{server.address[1]}/")
        raised = _run(device, tap, server, limits, interval, count, console, Live)
    except DeviceTimeout as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        transport.close()
        if tap is not None:
            tap.close()
        if server is not None:
            server.close()
    if count is not None and raised:
        raise SystemExit(1)


def _run(device, tap, server, limits, interval, count, console, live_cls) -> list:
    """Take readings until ``count`` (forever with None); returns the last alerts."""
    previous, subscribed, checked, taken, raised = None, None, -_SUBSCRIPTION_EVERY, 0, []
    live = live_cls(console=console, auto_refresh=False) if count is None else None
    if live is not None:
        live.start()
    try:
        while count is None or taken < count:
            if taken:
                time.sleep(interval)
            now = time.monotonic()
            if now - checked >= _SUBSCRIPTION_EVERY:
                subscribed, checked = len(device.subscriptions()), now
            if tap is not None:
                tap.drain()
            reading = take_reading(device, now, tap.ledger if tap else None, subscribed)
            fig = figures(reading, previous)
            raised = alerts(fig, limits)
            if server is not None:
                server.text = prometheus_text(fig, raised)
            if live is not None:
                live.update(dashboard(fig, raised), refresh=True)
            previous, taken = reading, taken + 1
        if live is None:
            console.print(dashboard(fig, raised))
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return raised
