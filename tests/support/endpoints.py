"""Endpoints used by the integration tests (mounted by handler path in test configs)."""

from __future__ import annotations

import os
import time

from wsserver import Endpoint


class Boom(Endpoint):
    """Raises on the text "boom", echoes otherwise."""

    def on_text(self, session, text):
        if text == "boom":
            raise RuntimeError("boom requested")
        session.send(text)


class WhoAmI(Endpoint):
    """Answers every message with facts about the session and the process."""

    def on_text(self, session, text):
        session.send(f"{os.getpid()} {session.port_alias} {session.path} {session.remote_address[0]}")


class CloseOnText(Endpoint):
    """Closes with the code given in the message."""

    def on_text(self, session, text):
        session.close(int(text), "requested")


class Sleepy(Endpoint):
    """Sleeps 200 ms per message (cooperatively in greenlet mode) and reports the peak concurrency."""

    running = 0
    peak = 0

    def on_text(self, session, text):
        cls = type(self)
        cls.running += 1
        cls.peak = max(cls.peak, cls.running)
        try:
            time.sleep(0.2)
        finally:
            cls.running -= 1
        session.send(f"done {cls.peak}")


class Busy(Endpoint):
    """Burns CPU for the milliseconds given after the client's timestamp; answers how long the
    message waited between the client sending it and this callback starting."""

    def on_text(self, session, text):
        started = time.time()
        sent, busy_ms = text.split()
        end = time.perf_counter() + float(busy_ms) / 1000
        while time.perf_counter() < end:
            pass
        session.send(f"{started - float(sent):.6f}")


class NativeBlock(Endpoint):
    """Blocks its OS thread for 500 ms in a real (unpatched) sleep, like a blocking C call."""

    def on_text(self, session, text):
        from gevent.monkey import get_original

        get_original("time", "sleep")(0.5)
        session.send("unblocked")


class SlowCounter(Endpoint):
    """Processes about 2000 messages/s and echoes each one (to prove nothing is dropped)."""

    def on_text(self, session, text):
        time.sleep(0.0005)
        session.send(text)


class Flood(Endpoint):
    """On "flood N", sends N binary messages of 64 KiB to a client that may not read them."""

    def on_text(self, session, text):
        count = int(text.split()[1])
        chunk = b"\x00" * 65536
        for _ in range(count):
            if session.closed:
                break
            session.send(chunk)
        if not session.closed:
            session.send("flood done")


class Threads(Endpoint):
    """Answers with the number of OS threads in this process."""

    def on_text(self, session, text):
        session.send(str(len(os.listdir("/proc/self/task"))))
