// tests/delivery/sidecursor.mjs - the side cursor format of docs/delivery.md
// ("Cursors"), decoded and built by the tests that check it (clients only
// store and hand back cursors; the tests check what the server promises):
//   side.<memberId>.p<base64url of the entries>, each entry two LEB128
//   varints: the stream index minus the previous one minus 1, then the
//   position within the stream (stream 0: the position; stream 1 + P, the
//   Kafka partition P: the offset, the position's low 48 bits).

const PART = 1n << 62n;
const SHIFT = 48n;
const LOW = (1n << SHIFT) - 1n;

/* the stream index of a position (BigInt or decimal string) */
export function streamOf(pos) {
    const p = BigInt(pos);
    return p & PART ? Number((p >> SHIFT) - (PART >> SHIFT)) + 1 : 0;
}

function varints(buf) {
    const out = [];
    let v = 0n, shift = 0n;
    for (const b of buf) {
        v |= BigInt(b & 0x7f) << shift;
        shift += 7n;
        if (!(b & 0x80)) {
            out.push(v);
            v = 0n;
            shift = 0n;
        }
    }
    if (shift) throw new Error('a truncated varint');
    return out;
}

function varint(v) {
    const out = [];
    let x = BigInt(v);
    do {
        let b = Number(x & 0x7fn);
        x >>= 7n;
        if (x) b |= 0x80;
        out.push(b);
    } while (x);
    return out;
}

/* {member, entries: Map(stream index -> full position as BigInt)}; throws
 * on anything but the vector form */
export function decodeSide(cursor) {
    const m = /^side\.(\d+)\.p([A-Za-z0-9_-]+)$/.exec(cursor);
    if (!m) throw new Error(`not a side vector cursor: ${cursor}`);
    const vs = varints(Buffer.from(m[2], 'base64url'));
    if (vs.length === 0 || vs.length % 2) throw new Error(`odd entries in ${cursor}`);
    const entries = new Map();
    let k = -1;
    for (let i = 0; i < vs.length; i += 2) {
        k += 1 + Number(vs[i]);
        entries.set(k, k === 0 ? vs[i + 1] : (((PART >> SHIFT) + BigInt(k - 1)) << SHIFT) | vs[i + 1]);
    }
    return { member: m[1], entries };
}

/* the cursor of member id with entries [[stream, full position], ...] (ascending) */
export function encodeSide(member, entries) {
    const bytes = [];
    let prev = -1;
    for (const [k, pos] of entries) {
        bytes.push(...varint(k - prev - 1), ...varint(k === 0 ? BigInt(pos) : BigInt(pos) & LOW));
        prev = k;
    }
    return `side.${member}.p${Buffer.from(bytes).toString('base64url')}`;
}

/* side.<member>.p followed by the base64url of raw bytes (malformed ones too) */
export function rawSide(member, bytes) {
    return `side.${member}.p${Buffer.from(bytes).toString('base64url')}`;
}
