// Decodes pgoutput messages (protocol version 1) into what WAL capture needs: column
// values as the server's text output, untouched. The event's row image is made from
// them by PostgreSQL itself (walQueue.ts), so no JS type parser stands between a
// value and the JSON the trigger would have written.
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html

/** A column value: the server's text output, null for SQL NULL, undefined for an unchanged TOASTed value not sent. */
export type WalValue = string | null | undefined;

export interface WalRelation {
  oid: number;
  schema: string;
  name: string;
  /** 'd' default, 'n' nothing, 'f' full, 'i' index. */
  replicaIdentity: string;
  columns: { name: string; typeOid: number }[];
}

export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: bigint; xid: number }
  | { tag: 'commit'; commitLsn: bigint; endLsn: bigint; commitTime: bigint }
  | { tag: 'relation'; relation: WalRelation }
  | { tag: 'insert'; relation: WalRelation; new: WalValue[] }
  | { tag: 'update'; relation: WalRelation; old: WalValue[] | null; new: WalValue[] }
  | { tag: 'delete'; relation: WalRelation; old: WalValue[]; keyOnly: boolean }
  | { tag: 'truncate'; relations: WalRelation[] }
  | { tag: 'other' };

export class PgoutputError extends Error {
  override name = 'PgoutputError';
}

class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    return this.buf.readUInt8(this.at++);
  }
  i16(): number {
    const v = this.buf.readInt16BE(this.at);
    this.at += 2;
    return v;
  }
  i32(): number {
    const v = this.buf.readInt32BE(this.at);
    this.at += 4;
    return v;
  }
  u64(): bigint {
    const v = this.buf.readBigUInt64BE(this.at);
    this.at += 8;
    return v;
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.at);
    if (end < 0) throw new PgoutputError('pgoutput: unterminated string');
    const s = this.buf.toString('utf8', this.at, end);
    this.at = end + 1;
    return s;
  }
  bytes(n: number): string {
    const s = this.buf.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }
}

/** One decoder per replication connection: relations are announced once per connection. */
export function makePgoutputDecoder() {
  const relations = new Map<number, WalRelation>();
  const relation = (oid: number): WalRelation => {
    const r = relations.get(oid);
    if (!r) throw new PgoutputError(`pgoutput: change for relation ${oid} before its relation message`);
    return r;
  };
  const tuple = (r: Reader, fallback?: WalValue[] | null): WalValue[] => {
    const n = r.i16();
    const values: WalValue[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const kind = r.u8();
      if (kind === 0x74 /* t */) values[i] = r.bytes(r.i32());
      else if (kind === 0x6e /* n */) values[i] = null;
      else if (kind === 0x75 /* u */) values[i] = fallback?.[i];
      else
        throw new PgoutputError(`pgoutput: column kind ${String.fromCharCode(kind)} (binary output is not requested)`);
    }
    return values;
  };

  return function decode(buf: Buffer): PgoutputMessage {
    const r = new Reader(buf);
    const tag = r.u8();
    switch (tag) {
      case 0x42 /* B */:
        {
          const finalLsn = r.u64();
          r.u64(); // commit timestamp
          return { tag: 'begin', finalLsn, xid: r.i32() >>> 0 };
        }
      case 0x43 /* C */:
        {
          r.u8(); // flags
          return { tag: 'commit', commitLsn: r.u64(), endLsn: r.u64(), commitTime: r.u64() };
        }
      case 0x52 /* R */:
        {
          const oid = r.i32();
          const schema = r.cstring();
          const name = r.cstring();
          const replicaIdentity = String.fromCharCode(r.u8());
          const n = r.i16();
          const columns: WalRelation['columns'] = [];
          for (let i = 0; i < n; i++) {
            r.u8();
            const colName = r.cstring();
            const typeOid = r.i32() >>> 0;
            r.i32();
            columns.push({ name: colName, typeOid });
          }
          const rel: WalRelation = { oid, schema, name, replicaIdentity, columns };
          relations.set(oid, rel);
          return { tag: 'relation', relation: rel };
        }
      case 0x49 /* I */:
        {
          const rel = relation(r.i32());
          r.u8(); // 'N'
          return { tag: 'insert', relation: rel, new: tuple(r) };
        }
      case 0x55 /* U */:
        {
          const rel = relation(r.i32());
          let kind = r.u8();
          let old: WalValue[] | null = null;
          if (kind === 0x4b /* K */ || kind === 0x4f /* O */) {
            const image = tuple(r);
            if (kind === 0x4f) old = image;
            kind = r.u8();
          }
          if (kind !== 0x4e /* N */) throw new PgoutputError('pgoutput: update without a new tuple');
          return { tag: 'update', relation: rel, old, new: tuple(r, old) };
        }
      case 0x44 /* D */:
        {
          const rel = relation(r.i32());
          const kind = r.u8();
          return { tag: 'delete', relation: rel, old: tuple(r), keyOnly: kind === 0x4b /* K */ };
        }
      case 0x54 /* T */:
        {
          const n = r.i32();
          r.u8();
          const rels: WalRelation[] = [];
          for (let i = 0; i < n; i++) rels.push(relation(r.i32()));
          return { tag: 'truncate', relations: rels };
        }
      default:
        // Origin, Type, Message: nothing an event needs.
        return { tag: 'other' };
    }
  };
}
