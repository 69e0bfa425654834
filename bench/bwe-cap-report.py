"""Summary of a bwe-cap.sh run: per subscriber, packets by keyframe size; the cap's effect."""
import json
import sys

r = json.load(open(sys.argv[1]))
lat = r["latency_ms"]
print(f"loss {r['loss']:.4%}; latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms")
for t in r["layers"]["tracks"]:
    sizes = ", ".join(f"{k} {v}" for k, v in sorted(t["by_resolution"].items()))
    print(f"{t['receiver']}: {t['packets']} packets ({sizes}); last {t['last_resolution']}")
for c in r.get("capped_subscribers", []):
    print(f"{c['subscriber']}: cap {c['cap_kbps']} kbit/s, offered {c['offered_kbps']:.0f}, received {c['received_kbps']:.0f}, dropped {c['dropped']['datagrams']} datagrams")
