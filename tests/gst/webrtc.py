#!/usr/bin/python3
"""A GStreamer webrtcbin client of WHIP (publish) or WHEP (play), with webrtcbin's defaults
(its own RSA certificate, libnice as the controlling ICE agent), for interop tests.

  webrtc.py publish URL TOKEN SECONDS [--ca CA]   videotestsrc (VP8) and audiotestsrc (Opus)
  webrtc.py play URL TOKEN SECONDS [--ca CA]      decodes the video, counts frames
  --cert PEM    a certificate and key for DTLS instead of webrtcbin's RSA one (diagnosis)

Prints one JSON line at the end: {"mode", "connected_s", "frames", "state", "location", "error",
"negotiations", "posts", "received", "lost"}: how often webrtcbin asked to negotiate (only the
first is acted on), how many offers were POSTed, and RTP packets over the session as
webrtcbin's stats tell.
Exits 0 when the session stayed connected for SECONDS (and, playing, frames kept coming).
"""
import argparse
import json
import ssl
import sys
import time
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PUBLISH = (
    "webrtcbin name=rtc bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! "
    "vp8enc deadline=1 target-bitrate=600000 keyframe-max-dist=60 ! rtpvp8pay pt=96 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! rtc. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay pt=111 ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! rtc. "
)


class Client:
    """One WHIP or WHEP session driven by a GLib main loop."""

    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.frames = 0
        self.connected_at = None
        self.state = "new"
        self.error = None
        self.location = None
        self.stats = {"received": 0, "lost": 0}
        self.negotiations = 0
        self.posts = 0
        if args.mode == "publish":
            self.pipe = Gst.parse_launch(PUBLISH)
        else:
            # A lone element parses to itself, not to a pipeline: build the pipeline by hand.
            self.pipe = Gst.Pipeline.new("play")
            rtc = Gst.ElementFactory.make("webrtcbin", "rtc")
            rtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.pipe.add(rtc)
        self.rtc = self.pipe.get_by_name("rtc")
        if args.mode == "play":
            for caps in ("application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
                         "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"):
                self.rtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, Gst.Caps.from_string(caps))
            self.rtc.connect("pad-added", self.on_pad)
        self.rtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.rtc.connect("notify::ice-connection-state", self.on_ice_state)
        self.rtc.connect("notify::connection-state", self.on_ice_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    def on_error(self, _bus, msg):
        err, _ = msg.parse_error()
        self.fail(f"gstreamer: {err.message}")

    def fail(self, why):
        if self.error is None:
            self.error = why
        self.loop.quit()

    def on_ice_state(self, rtc, _pspec):
        ice = rtc.get_property("ice-connection-state")
        conn = rtc.get_property("connection-state")
        self.state = f"ice={ice.value_nick} pc={conn.value_nick}"
        if conn == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and self.connected_at is None:
            self.connected_at = time.monotonic()
        if conn in (GstWebRTC.WebRTCPeerConnectionState.FAILED, GstWebRTC.WebRTCPeerConnectionState.CLOSED) or \
                ice in (GstWebRTC.WebRTCICEConnectionState.FAILED, GstWebRTC.WebRTCICEConnectionState.DISCONNECTED):
            self.fail(f"connection lost: {self.state}")

    def on_pad(self, _rtc, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        media = caps.get_structure(0).get_string("media")
        if media == "video":
            chain = "queue ! rtpvp8depay ! vp8dec ! fakesink name=vsink sync=false signal-handoffs=true"
        else:
            chain = "queue ! fakesink sync=false"
        bin_ = Gst.parse_bin_from_description(chain, True)
        self.pipe.add(bin_)
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))
        sink = bin_.get_by_name("vsink")
        if sink is not None:
            sink.connect("handoff", self.on_frame)

    def on_frame(self, *_):
        self.frames += 1

    def on_negotiation_needed(self, rtc):
        # WHIP and WHEP negotiate once, with the POST; webrtcbin may ask again later.
        self.negotiations += 1
        if self.negotiations > 1:
            return
        promise = Gst.Promise.new_with_change_func(self.on_offer, rtc, None)
        rtc.emit("create-offer", None, promise)

    def on_offer(self, promise, rtc, _):
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            self.fail(f"create-offer: {reply.to_string() if reply is not None else 'no reply'}")
            return
        rtc.emit("set-local-description", offer, Gst.Promise.new())
        self.use_certificate()
        # No trickle: wait for gathering to finish, then send the whole offer.
        GLib.timeout_add(100, self.send_when_gathered)

    def use_certificate(self):
        """Gives every DTLS transport the certificate and key of --cert (PEM), instead of
        webrtcbin's generated RSA one."""
        if not self.args.cert:
            return
        with open(self.args.cert) as f:
            pem = f.read()
        for i in range(16):
            t = self.rtc.emit("get-transceiver", i)
            if t is None:
                break
            transport = t.get_property("sender").get_property("transport")
            if transport is not None:
                transport.set_property("certificate", pem)

    def send_when_gathered(self):
        if self.rtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return True
        sdp = self.rtc.get_property("local-description").sdp.as_text()
        ctx = ssl.create_default_context(cafile=self.args.ca) if self.args.ca else ssl.create_default_context()
        req = urllib.request.Request(self.args.url, data=sdp.encode(), method="POST",
                                     headers={"content-type": "application/sdp", "authorization": f"Bearer {self.args.token}"})
        self.posts += 1
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as res:
                answer = res.read().decode()
                self.location = res.headers.get("location")
        except Exception as e:  # noqa: BLE001 - reported, then the client ends
            self.fail(f"http: {e}")
            return False
        _, msg = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.rtc.emit("set-remote-description", desc, Gst.Promise.new())
        return False

    def rtp_stats(self):
        """Packets received and lost over the inbound RTP streams (playing), or lost as the
        server's receiver reports tell (publishing), from webrtcbin's get-stats."""
        promise = Gst.Promise.new()
        self.rtc.emit("get-stats", None, promise)
        promise.wait()
        reply = promise.get_reply()
        totals = {"received": 0, "lost": 0}
        if reply is None:
            return totals
        wanted = "inbound-rtp" if self.args.mode == "play" else "remote-inbound-rtp"

        def each(_field_id, value, _data):
            if isinstance(value, Gst.Structure) and value.get_name() == wanted:
                for field, key in (("packets-received", "received"), ("packets-lost", "lost")):
                    if value.has_field(field):
                        totals[key] += int(value.get_value(field))
            return True

        reply.foreach(each, None)
        return totals

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        start = time.monotonic()
        deadline = self.args.seconds + 20

        def tick():
            now = time.monotonic()
            if self.connected_at is None and now - start > 20:
                self.fail(f"not connected after 20 s: {self.state}")
            elif self.connected_at is not None and now - self.connected_at >= self.args.seconds:
                self.loop.quit()
            elif now - start > deadline:
                self.fail("ran out of time")
            return True

        GLib.timeout_add(250, tick)
        self.loop.run()
        connected_s = 0.0 if self.connected_at is None else time.monotonic() - self.connected_at
        self.stats = self.rtp_stats()
        self.pipe.set_state(Gst.State.NULL)
        return connected_s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["publish", "play"])
    p.add_argument("url")
    p.add_argument("token")
    p.add_argument("seconds", type=float)
    p.add_argument("--ca")
    p.add_argument("--cert", help="PEM certificate and key for DTLS (default: webrtcbin's own RSA one)")
    args = p.parse_args()
    Gst.init(None)
    c = Client(args)
    connected_s = c.run()
    print(json.dumps({"mode": args.mode, "connected_s": round(connected_s, 1), "frames": c.frames, "state": c.state,
                      "location": c.location, "error": c.error, "negotiations": c.negotiations, "posts": c.posts, **c.stats}), flush=True)
    ok = c.error is None and connected_s >= args.seconds and (args.mode == "publish" or c.frames > 0)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
