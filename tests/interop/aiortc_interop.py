#!/usr/bin/env python3
"""Interop test: aiortc, a WebRTC stack independent of Chromium and str0m, as a client of our SFU.

Why: the e2e tests only use Chromium, so an SFU that happens to work with one stack's quirks could
still break others. Here two aiortc clients A and B speak docs/protocol.md over python-socketio:
each joins the room `interop`, publishes a synthetic VP8 camera and an Opus sine tone (publisher
PC, client offers) and answers the server's offers on its subscriber PC. Passes when each client
decoded >= MIN_VIDEO_FRAMES video frames of the *other* client at the publisher's resolution and
colour, and >= MIN_AUDIO_FRAMES audio frames carrying the other client's tone, within the deadline.

Run (aiortc skips loopback interfaces, hence the extra veth holding 127.0.0.2):
    STUDYROOM_BIN=target/release/studyroom NETNS_LO2=1 bash scripts/netns_run.sh \
        python3 tests/interop/aiortc_interop.py
Env: STUDYROOM_BIN (required), INTEROP_VERBOSE=1 prints SDPs even on success,
INTEROP_DEBUG=1 turns on aiortc/aioice debug logs. Exit 0 = pass, 1 = fail, 2 = hard deadline.
"""
import array
import asyncio
import fractions
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import aioice.ice
import socketio
from aiortc import (RTCConfiguration, RTCPeerConnection, RTCSessionDescription,
                    AudioStreamTrack, VideoStreamTrack)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

HTTP = "http://127.0.0.1:5002"
NS = "/study"
ROOM = "interop"
HARD_DEADLINE_S = 60       # SIGALRM: kill everything, exit 2
TEST_DEADLINE_S = 50       # the asyncio part (server start excluded) must finish within this
WIDTH, HEIGHT = 320, 240
MIN_VIDEO_FRAMES = 60      # 2 s at 30 fps
MIN_AUDIO_FRAMES = 100     # 2 s of 20 ms Opus frames
MIN_TONE_FRAMES = 50
ACK_TIMEOUT_S = 10
# Each publisher is recognisable in what the other decodes: flat chroma and a tone frequency.
LOOKS = {"A": {"u": 64, "v": 192, "tone": 440}, "B": {"u": 192, "v": 64, "tone": 880}}
VERBOSE = os.environ.get("INTEROP_VERBOSE") == "1"
T0 = time.monotonic()


class Failure(Exception):
    pass


def log(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


# ---------------------------------------------------------------- synthetic media

class ColourBarTrack(VideoStreamTrack):
    """WIDTHxHEIGHT yuv420p at 30 fps: a white bar moving over grey, chroma set per publisher."""

    def __init__(self, u, v):
        super().__init__()
        self.u, self.v, self.n = u, v, 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        y_plane, u_plane, v_plane = frame.planes
        x = (self.n * 4) % (WIDTH - 32)
        row = bytes([96]) * x + bytes([235]) * 32 + bytes([96]) * (y_plane.line_size - x - 32)
        y_plane.update(row * (y_plane.buffer_size // y_plane.line_size))
        u_plane.update(bytes([self.u]) * u_plane.buffer_size)
        v_plane.update(bytes([self.v]) * v_plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


class ToneTrack(AudioStreamTrack):
    """48 kHz mono s16 sine tone in 20 ms frames, paced in real time."""

    RATE, SAMPLES = 48000, 960

    def __init__(self, hz):
        super().__init__()
        # hz is an integer, so one second holds whole periods and loops seamlessly.
        self.second = array.array("h", (int(8000 * math.sin(2 * math.pi * hz * i / self.RATE))
                                        for i in range(self.RATE))).tobytes()
        self.ts, self.start = 0, None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
        else:
            self.ts += self.SAMPLES
            await asyncio.sleep(self.start + self.ts / self.RATE - time.time())
        frame = AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        off = (self.ts % self.RATE) * 2
        frame.planes[0].update(self.second[off:off + self.SAMPLES * 2])
        frame.pts, frame.sample_rate = self.ts, self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


def tone_hz(frame):
    """Frequency estimate of channel 0 of a decoded s16 (packed) frame, by zero crossings."""
    channels = len(frame.layout.channels)
    pcm = array.array("h")
    pcm.frombytes(bytes(frame.planes[0])[: frame.samples * channels * 2])
    ch0 = pcm[::channels]
    crossings = sum(1 for a, b in zip(ch0, ch0[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (frame.samples / frame.sample_rate)


def centre_chroma(frame):
    """(U, V) at the centre of a decoded frame (any format is converted to yuv420p first)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    out = []
    for plane in frame.planes[1:3]:
        out.append(bytes(plane)[(frame.height // 4) * plane.line_size + frame.width // 4])
    return tuple(out)


# ---------------------------------------------------------------- one aiortc client

class Client:
    def __init__(self, name, token):
        self.name, self.token = name, token
        self.look = LOOKS[name]
        debug = os.environ.get("INTEROP_DEBUG") == "1"
        self.sio = socketio.AsyncClient(reconnection=False, logger=debug, engineio_logger=debug)
        # Default bundle policy on purpose: with MAX_BUNDLE aiortc 1.x takes the remote
        # candidates from the *last* m-section of the answer, which a BUNDLE answer (ours, per
        # RFC 8843) leaves without candidates, so ICE never starts (see README.md).
        self.pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.sub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pid = None
        self.offers = asyncio.Queue()
        self.mid_info = {}          # subscriber mid -> track entry of the latest offer
        self.events = []            # (event, payload) pushed by the server, for diagnostics
        self.errors = []            # `error` events: a well-behaved client must get none
        self.sdps = []              # (label, sdp)
        self.failure = None
        self.tasks = []
        self.video = {"frames": 0, "bad_size": [], "bad_colour": [], "from": set()}
        self.audio = {"frames": 0, "tone": 0, "hz": []}
        self.codecs = {}
        for pc, label in ((self.pub, "pub"), (self.sub, "sub")):
            pc.on("connectionstatechange",
                  lambda pc=pc, label=label: log(f"{self.name} {label} PC {pc.connectionState}"))
        self.sub.on("track", self.on_track)

    def spawn(self, coro):
        async def guarded():
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any error in a task fails the test
                if self.failure is None:
                    self.failure = f"{self.name}: {type(e).__name__}: {e}"
        self.tasks.append(asyncio.ensure_future(guarded()))

    async def request(self, event, payload):
        try:
            res = await self.sio.call(event, payload, namespace=NS, timeout=ACK_TIMEOUT_S)
        except socketio.exceptions.TimeoutError:
            raise Failure(f"{self.name}: no ack for `{event}` within {ACK_TIMEOUT_S} s") from None
        if isinstance(res, dict) and "error" in res:
            raise Failure(f"{self.name}: `{event}` refused: {res['error']}")
        return res

    async def start(self):
        for ev in ("participantJoined", "participantLeft", "trackPublished", "trackUnpublished",
                   "trackMuted", "activeSpeakers"):
            self.sio.on(ev, self.recorder(ev), namespace=NS)
        self.sio.on("offer", self.on_offer, namespace=NS)
        self.sio.on("error", self.on_error, namespace=NS)
        try:
            await self.sio.connect(HTTP, namespaces=[NS], auth={"token": self.token},
                                   transports=["websocket"], wait_timeout=5)
        except socketio.exceptions.ConnectionError as e:
            raise Failure(f"{self.name}: Socket.IO connect to {HTTP}{NS} failed: {e}") from e
        self.spawn(self.offer_worker())

        res = await self.request("join", {})
        if not isinstance(res, dict) or not isinstance(res.get("participant"), dict):
            raise Failure(f"{self.name}: join ack lacks `participant`: {res!r}")
        self.pid = res["participant"]["id"]
        log(f"{self.name} joined as {self.pid}; in room: "
            f"{[p.get('id') for p in res.get('participants', [])]}")

        # Publisher PC: camera + microphone, sendonly, offered by us.
        v = self.pub.addTransceiver(ColourBarTrack(self.look["u"], self.look["v"]),
                                    direction="sendonly")
        a = self.pub.addTransceiver(ToneTrack(self.look["tone"]), direction="sendonly")
        await self.pub.setLocalDescription(await self.pub.createOffer())
        offer = self.pub.localDescription.sdp
        self.sdps.append(("publisher offer (aiortc)", offer))
        res = await self.request("publish", {"sdp": offer, "tracks": [
            {"mid": v.mid, "source": "camera"}, {"mid": a.mid, "source": "microphone"}]})
        if not isinstance(res, dict) or not isinstance(res.get("sdp"), str):
            raise Failure(f"{self.name}: publish ack lacks `sdp`: {res!r}")
        self.sdps.append(("publisher answer (server)", res["sdp"]))
        tracks = res.get("tracks") or []
        kinds = sorted(t.get("kind") for t in tracks)
        if kinds != ["audio", "video"] or any(t.get("participantId") != self.pid for t in tracks):
            raise Failure(f"{self.name}: publish ack tracks should be our audio+video: {tracks!r}")
        self.codecs = {t["kind"]: t.get("codec") for t in tracks}
        await self.pub.setRemoteDescription(RTCSessionDescription(res["sdp"], "answer"))
        await self.end_of_candidates(self.pub)
        log(f"{self.name} published {[(t['kind'], t.get('codec'), t['id']) for t in tracks]}")

    @staticmethod
    async def end_of_candidates(pc):
        # The protocol: the server's SDP holds all its candidates, it never trickles. Its SDP
        # lacks a=end-of-candidates, so tell aiortc, or a failed pair leaves ICE waiting forever.
        await pc.addIceCandidate(None)

    def check(self):
        """Fail fast on an error in a task or a failed peer connection."""
        if self.failure:
            raise Failure(self.failure)
        for pc, label in ((self.pub, "publisher"), (self.sub, "subscriber")):
            if pc.connectionState == "failed":
                raise Failure(f"{self.name}: {label} PC failed (ICE {pc.iceConnectionState}); "
                              "INTEROP_DEBUG=1 shows aioice's connectivity checks")

    async def video_packets_sent(self):
        stats = (await self.pub.getStats()).values()
        return sum(s.packetsSent for s in stats if s.type == "outbound-rtp" and s.kind == "video")

    def recorder(self, ev):
        async def handler(data=None):
            self.events.append((ev, data))
        return handler

    async def on_error(self, data=None):
        self.errors.append(data)
        log(f"{self.name} got `error` event: {data!r}")

    async def on_offer(self, data=None):
        await self.offers.put(data)     # handled one at a time by offer_worker

    async def offer_worker(self):
        while True:
            data = await self.offers.get()
            if not isinstance(data, dict) or not isinstance(data.get("sdp"), str):
                raise Failure(f"`offer` event without an sdp string: {data!r}")
            n = sum(1 for label, _ in self.sdps if label.startswith("subscriber offer"))
            self.sdps.append((f"subscriber offer #{n + 1} (server)", data["sdp"]))
            tracks = data.get("tracks") or []
            for t in tracks:
                if t.get("participantId") == self.pid:
                    raise Failure(f"server offered us our own track: {t!r}")
                self.mid_info[t.get("mid")] = t
            log(f"{self.name} got offer #{n + 1}: "
                f"{[(t.get('mid'), t.get('kind'), t.get('participantId')) for t in tracks]}")
            await self.sub.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
            await self.end_of_candidates(self.sub)
            await self.sub.setLocalDescription(await self.sub.createAnswer())
            answer = self.sub.localDescription.sdp
            self.sdps.append((f"subscriber answer #{n + 1} (aiortc)", answer))
            await self.request("answer", {"sdp": answer})

    def on_track(self, track):
        mid = next((t.mid for t in self.sub.getTransceivers() if t.receiver.track is track), None)
        log(f"{self.name} subscriber track: mid={mid} kind={track.kind}")
        self.spawn(self.consume(track, mid))

    async def consume(self, track, mid):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return      # the m-line went away (e.g. unpublished); nothing more to count
            info = self.mid_info.get(mid) or {}
            other = OTHER[self.name]
            if info.get("participantId") != other.pid:
                raise Failure(f"frame on mid {mid} attributed to {info.get('participantId')!r}, "
                              f"expected the other client {other.pid!r} (offer tracks: {info!r})")
            if track.kind == "video":
                self.video["frames"] += 1
                self.video["from"].add(info.get("trackId"))
                if (frame.width, frame.height) != (WIDTH, HEIGHT):
                    self.video["bad_size"].append((frame.width, frame.height))
                u, v = centre_chroma(frame)
                if abs(u - other.look["u"]) > 30 or abs(v - other.look["v"]) > 30:
                    self.video["bad_colour"].append((u, v))
                if self.video["frames"] == 1:
                    log(f"{self.name} decoded first video frame {frame.width}x{frame.height}")
            else:
                self.audio["frames"] += 1
                hz = tone_hz(frame)
                self.audio["hz"] = (self.audio["hz"] + [round(hz)])[-5:]
                if abs(hz - other.look["tone"]) <= 0.15 * other.look["tone"]:
                    self.audio["tone"] += 1
                if self.audio["frames"] == 1:
                    log(f"{self.name} decoded first audio frame "
                        f"({frame.sample_rate} Hz, {len(frame.layout.channels)} ch)")

    def done(self):
        return (self.video["frames"] - len(self.video["bad_size"]) >= MIN_VIDEO_FRAMES
                and self.audio["frames"] >= MIN_AUDIO_FRAMES
                and self.audio["tone"] >= MIN_TONE_FRAMES)

    def verdict(self):
        """Problems in what was received (empty = good)."""
        other, problems = OTHER[self.name].name, []
        if self.errors:
            problems.append(f"server pushed `error` events: {self.errors!r}")
        if self.video["bad_size"]:
            problems.append(f"{len(self.video['bad_size'])} video frames not {WIDTH}x{HEIGHT}, "
                            f"e.g. {self.video['bad_size'][:3]}")
        if len(self.video["bad_colour"]) > self.video["frames"] // 10:
            problems.append(f"{len(self.video['bad_colour'])}/{self.video['frames']} video frames "
                            f"lack {other}'s colour, e.g. (U, V) {self.video['bad_colour'][:3]}")
        if self.video["frames"] < MIN_VIDEO_FRAMES:
            problems.append(f"decoded {self.video['frames']} video frames from {other} "
                            f"(need {MIN_VIDEO_FRAMES})")
        if self.audio["frames"] < MIN_AUDIO_FRAMES:
            problems.append(f"decoded {self.audio['frames']} audio frames from {other} "
                            f"(need {MIN_AUDIO_FRAMES})")
        elif self.audio["tone"] < MIN_TONE_FRAMES:
            problems.append(f"only {self.audio['tone']} audio frames carry {other}'s "
                            f"{LOOKS[other]['tone']} Hz tone; last estimates {self.audio['hz']}")
        return problems

    def describe(self):
        def pc_state(pc):
            return f"signaling={pc.signalingState} ice={pc.iceConnectionState} " \
                   f"conn={pc.connectionState}"
        return (f"{self.name} (participant {self.pid}): pub[{pc_state(self.pub)}] "
                f"sub[{pc_state(self.sub)}]\n  video {self.video['frames']} frames "
                f"(tracks {sorted(map(str, self.video['from']))}), audio {self.audio['frames']} "
                f"frames ({self.audio['tone']} with the tone, last Hz {self.audio['hz']}), "
                f"published codecs {self.codecs}\n  events: "
                f"{[e for e, _ in self.events]}")

    async def close(self):
        for t in self.tasks:
            t.cancel()
        if self.sio.connected:
            try:
                await self.request("leave", {})
            except Exception as e:  # noqa: BLE001 - teardown only reports
                log(f"{self.name}: leave failed: {e}")
            await self.sio.disconnect()
        for pc in (self.pub, self.sub):
            try:
                await asyncio.wait_for(pc.close(), 5)
            except Exception as e:  # noqa: BLE001
                log(f"{self.name}: closing a PC failed: {e!r}")


OTHER = {}


# ---------------------------------------------------------------- server and main

def start_server(logfile):
    binary = os.environ.get("STUDYROOM_BIN")
    if not binary or not os.access(binary, os.X_OK):
        raise Failure(f"STUDYROOM_BIN must name the studyroom binary (got {binary!r})")
    proc = subprocess.Popen([binary, "--dev", "--node-ip", "127.0.0.1"], stdout=logfile,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failure(f"server exited with status {proc.returncode} before /healthz was up")
        try:
            with urllib.request.urlopen(f"{HTTP}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    raise Failure("server's /healthz did not answer 200 within 10 s")


def dev_token(name):
    url = f"{HTTP}/dev/token?room={ROOM}&name={name}"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if not isinstance(body.get("token"), str):
        raise Failure(f"GET {url} gave no token: {body!r}")
    return body["token"]


async def run(clients):
    a, b = clients
    OTHER.update({"A": b, "B": a})
    deadline = time.monotonic() + TEST_DEADLINE_S
    # A publishes first, so B subscribes to media already flowing (needs a keyframe on demand),
    # while A's subscriber PC gets B's tracks by renegotiation.
    await a.start()
    # Let A's video flow for a while first: aiortc sends a keyframe only at the start and on
    # request (gop 3000), so B decodes A only if the SFU gets it a fresh keyframe (PLI/FIR).
    while await a.video_packets_sent() < 45:
        a.check()
        if time.monotonic() > deadline:
            raise Failure("A's publisher never sent 45 video packets")
        await asyncio.sleep(0.1)
    log(f"A has sent {await a.video_packets_sent()} video packets; B joins now")
    await b.start()
    while not all(c.done() for c in clients):
        for c in clients:
            c.check()
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {TEST_DEADLINE_S} s waiting for media")
        await asyncio.sleep(0.1)
    problems = [f"{c.name}: {p}" for c in clients for p in c.verdict()]
    if problems:
        raise Failure("; ".join(problems))


def dump(clients, proc_log_path, server_log_lines=300):
    for line in ICE_FAILURES.lines:
        print(f"aioice: {line}")
    for c in clients:
        print(c.describe())
        for label, sdp in c.sdps:
            print(f"---- {c.name} {label}\n{sdp.strip()}")
    if proc_log_path:
        with open(proc_log_path, errors="replace") as f:
            lines = f.readlines()
        print(f"---- server log (last {server_log_lines} of {len(lines)} lines)")
        print("".join(lines[-server_log_lines:]), end="")


class IceFailures(logging.Handler):
    """Keeps aioice's reasons for failed checks (e.g. 'source address mismatch') for the report."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        msg = record.getMessage()
        if "failed" in msg and len(self.lines) < 20:
            self.lines.append(msg)


ICE_FAILURES = IceFailures()


def main():
    if os.environ.get("INTEROP_DEBUG") == "1":
        logging.basicConfig(level=logging.DEBUG)
    ice_log = logging.getLogger("aioice.ice")
    ice_log.addHandler(ICE_FAILURES)
    if ice_log.getEffectiveLevel() > logging.INFO:
        ice_log.setLevel(logging.INFO)
        ice_log.propagate = False   # collected, not printed
    hosts = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not hosts:
        print("FAIL: aiortc sees no non-loopback IPv4 address, so it would gather no ICE "
              "candidates; run inside `NETNS_LO2=1 bash scripts/netns_run.sh ...`")
        return 1
    logfile = tempfile.NamedTemporaryFile("w", prefix="studyroom-interop-", suffix=".log",
                                          delete=False)
    proc, clients, result = None, [], 1

    def hard_deadline(*_):
        print(f"FAIL: hard deadline of {HARD_DEADLINE_S} s exceeded", flush=True)
        dump(clients, logfile.name)
        if proc:
            proc.kill()
        os._exit(2)
    signal.signal(signal.SIGALRM, hard_deadline)
    signal.alarm(HARD_DEADLINE_S)

    async def body():
        clients.extend([Client("A", dev_token("A")), Client("B", dev_token("B"))])
        try:
            await run(clients)
        finally:
            for c in clients:
                await c.close()

    try:
        proc = start_server(logfile)
        log(f"server up (pid {proc.pid}), aiortc host addresses {hosts}")
        asyncio.run(asyncio.wait_for(body(), TEST_DEADLINE_S + 5))
        with open(logfile.name, errors="replace") as f:
            panics = [line for line in f if "panicked" in line]
        if panics:
            raise Failure(f"server log shows a panic: {panics[0].strip()}")
        for c in clients:
            log(f"OK {c.name}: {c.video['frames']} video frames {WIDTH}x{HEIGHT} and "
                f"{c.audio['frames']} audio frames ({c.audio['tone']} with the tone) from "
                f"{OTHER[c.name].name}; codecs published {c.codecs}")
        if VERBOSE:
            dump(clients, logfile.name)
        print("PASS: aiortc interop")
        result = 0
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        if not isinstance(e, Failure):
            traceback.print_exc()
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        dump(clients, logfile.name)
    finally:
        signal.alarm(0)
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        logfile.close()
        os.unlink(logfile.name)
    return result


if __name__ == "__main__":
    sys.exit(main())
