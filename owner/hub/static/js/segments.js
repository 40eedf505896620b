// Clips stored as segments (issue 15; docs/capture.md, "Clips as segments"). Each segment is
// its own sealed, signed artifact whose plaintext is the clip's init segment (ftyp + moov)
// followed by fragments (moof + mdat). Joining keeps the first one's init and appends every
// segment's fragments: the muxer's own stream for the clip, which a <video> plays and seeks.
// The same rule as core/fmp4.py on the Python side.

const INIT = new Set(["ftyp", "moov"]);
const FRAGMENT = new Set(["moof", "mdat"]);

function boxes(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes.length - pos < 8) throw new Error(`fMP4: ${bytes.length - pos} stray bytes at ${pos}`);
    let size = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    let header = 8;
    if (size === 1) {
      size = Number(view.getBigUint64(pos + 8));
      header = 16;
    }
    if (size < header || pos + size > bytes.length) throw new Error(`fMP4: box ${type} at ${pos} is cut off`);
    out.push({ type, start: pos, end: pos + size });
    pos += size;
  }
  return out;
}

// [init, fragments] of one segment's plaintext.
export function splitInit(bytes) {
  const found = boxes(bytes);
  let initEnd = 0;
  for (const b of found) if (INIT.has(b.type) && b.start === initEnd) initEnd = b.end;
  if (!found.some((b) => b.type === "moov" && b.end <= initEnd)) {
    throw new Error("fMP4: the segment does not begin with its init segment");
  }
  for (const b of found) {
    if (b.start >= initEnd && !FRAGMENT.has(b.type)) throw new Error(`fMP4: unexpected box ${b.type}`);
  }
  return [bytes.subarray(0, initEnd), bytes.subarray(initEnd)];
}

const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// One MP4 from a clip's segment plaintexts, in order.
export function join(plains) {
  if (!plains.length) throw new Error("no segments to join");
  const [init, first] = splitInit(plains[0]);
  const parts = [init, first];
  plains.slice(1).forEach((p, i) => {
    const [other, fragments] = splitInit(p);
    if (!same(other, init)) throw new Error(`segment ${i + 2} belongs to another clip`);
    parts.push(fragments);
  });
  return new Blob(parts, { type: "video/mp4" });
}

// The seqs of a clip's segments: from its sealed clip event when it has come (what the
// doorbell says made the clip), else what the timeline holds so far (still recording).
export function segmentSeqs(first, clipEvent, items, device) {
  if (clipEvent?.segments?.length) return clipEvent.segments;
  return [first, ...items.filter((i) => i.device === device && i.kind === "segment" &&
    i.parent === String(first)).map((i) => i.seq)].sort((a, b) => a - b);
}

// Are all of a finished clip's segments in the hub's store yet? On a slow uplink the clip
// event (small, and sent ahead of video) is stored before the clip's last segments; such a
// clip is played as it still records, as its segments arrive. Asks the hub which of the
// seqs it holds (their signed manifests, which the player checks again one by one).
export async function allStored(device, seqs) {
  if (!seqs.length) return true;
  const lo = Math.min(...seqs), hi = Math.max(...seqs);
  if (hi - lo >= 500) return true;           // more than one page: the whole-clip path says what is missing
  const r = await fetch(`/api/devices/${encodeURIComponent(device)}/manifests?from=${lo}&to=${hi}`,
    { credentials: "same-origin" });
  if (!r.ok) return true;
  const have = new Set((await r.json()).manifests.map((m) => m.seq));
  return seqs.every((s) => have.has(s));
}
