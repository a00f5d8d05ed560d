#!/usr/bin/env node
// The seeds' "interrupt" double-texting guide against Turnstile, from Node.js.
//
// A first run of the built-in `agent` graph is made slow (input `sleep`: every step waits
// that long first); while it runs, a second run on the same thread with multitask strategy
// INTERRUPT stops it. The first run ends INTERRUPTED, superseded by the second; its input
// stays in the thread, then comes the second input and its answer.
//
//   node interrupt.js [address]      address: argument, $TURNSTILE_ADDRESS or 127.0.0.1:50051
//   TURNSTILE_API_KEY=...            sent as `authorization: Bearer <key>` when set
//
// The last line printed is one JSON object with the outcome, for scripts and tests.
'use strict';

const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ADDRESS = process.argv[2] || process.env.TURNSTILE_ADDRESS || '127.0.0.1:50051';
const API_KEY = process.env.TURNSTILE_API_KEY || '';
const ASSISTANT_ID = 'agent';
const STRATEGY = 'MULTITASK_STRATEGY_INTERRUPT';
const FIRST_RUN_STEP_SECONDS = 5; // as in the seed: the first run is stopped in its first step
const PAUSE_MS = 1000; // let the first run start before double-texting
const DEADLINE_MS = 10_000; // every call has a deadline...
const JOIN_DEADLINE_MS = 60_000; // ...JoinRun's covers the whole second run

// The .proto files are read at run time; nothing is generated.
const packageDefinition = protoLoader.loadSync(
  ['turnstile/v1/thread_service.proto', 'turnstile/v1/run_service.proto'],
  {
    includeDirs: [path.resolve(__dirname, '../../proto')],
    keepCase: true, // snake_case field names, as in the .proto files and grpcurl's JSON
    enums: String, // 'RUN_STATUS_INTERRUPTED' rather than 6
    longs: Number, // int64s here (event seq, timestamp seconds) stay far below 2^53
    defaults: true, // unset scalars read as '' / 0 rather than undefined
    oneofs: true, // google.protobuf.Value says which of its fields is set in `kind`
  },
);
const { turnstile } = grpc.loadPackageDefinition(packageDefinition);

// google.protobuf.Struct/Value <-> plain JSON. proto-loader hands them over as messages.
function toValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  switch (typeof value) {
    case 'number':
      return { numberValue: value };
    case 'string':
      return { stringValue: value };
    case 'boolean':
      return { boolValue: value };
    default:
      return { structValue: toStruct(value) };
  }
}

function toStruct(object) {
  return { fields: Object.fromEntries(Object.entries(object).map(([k, v]) => [k, toValue(v)])) };
}

function fromValue(value) {
  switch (value?.kind) {
    case 'structValue':
      return fromStruct(value.structValue);
    case 'listValue':
      return (value.listValue.values || []).map(fromValue);
    case 'nullValue':
    case undefined:
      return null;
    default:
      return value[value.kind];
  }
}

function fromStruct(struct) {
  if (!struct) return null;
  return Object.fromEntries(Object.entries(struct.fields || {}).map(([k, v]) => [k, fromValue(v)]));
}

// Unary calls as promises, each with a deadline and, when configured, the API key.
function call(client, method, request, deadlineMs = DEADLINE_MS) {
  const metadata = new grpc.Metadata();
  if (API_KEY) metadata.set('authorization', `Bearer ${API_KEY}`);
  const deadline = new Date(Date.now() + deadlineMs);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, response) => {
      if (error) {
        error.method = method;
        reject(error);
      } else {
        resolve(response);
      }
    });
  });
}

// 'RUN_STATUS_INTERRUPTED' -> 'interrupted', as the Python SDK spells statuses.
const short = (name, prefix) => name.slice(prefix.length).toLowerCase();

function human(text, extra = {}) {
  return toStruct({ messages: [{ role: 'human', content: text }], ...extra });
}

async function main() {
  const credentials = grpc.credentials.createInsecure();
  const threads = new turnstile.v1.ThreadService(ADDRESS, credentials);
  const runs = new turnstile.v1.RunService(ADDRESS, credentials);
  try {
    const { thread } = await call(threads, 'CreateThread', {});
    const thread_id = thread.thread_id;
    console.log(`thread ${thread_id} on ${ADDRESS}`);

    // The first run will be interrupted.
    const { run: interrupted } = await call(runs, 'CreateRun', {
      thread_id,
      assistant_id: ASSISTANT_ID,
      input: human("what's the weather in sf?", { sleep: FIRST_RUN_STEP_SECONDS }),
    });
    await sleep(PAUSE_MS);
    const { run: second } = await call(runs, 'CreateRun', {
      thread_id,
      assistant_id: ASSISTANT_ID,
      input: human("what's the weather in nyc?"),
      multitask_strategy: STRATEGY,
    });
    console.log(`first run ${interrupted.run_id}, second run ${second.run_id} (${STRATEGY})`);

    // Wait until the second run completes.
    const joined = await call(
      runs,
      'JoinRun',
      { thread_id, run_id: second.run_id },
      JOIN_DEADLINE_MS,
    );
    const { run: first } = await call(runs, 'GetRun', { thread_id, run_id: interrupted.run_id });
    const { checkpoint } = await call(threads, 'GetThreadState', { thread_id });
    const messages = fromStruct(checkpoint.values)?.messages ?? [];

    for (const message of messages) prettyPrint(message);
    console.log(
      `first run: ${short(first.status, 'RUN_STATUS_')}` +
        (first.superseded_by ? ` (superseded by ${first.superseded_by})` : ''),
    );
    console.log(`second run: ${short(joined.run.status, 'RUN_STATUS_')}`);

    console.log(
      JSON.stringify({
        thread_id,
        first_run: {
          run_id: first.run_id,
          status: short(first.status, 'RUN_STATUS_'),
          superseded_by: first.superseded_by,
          cancel_reason: first.cancel_reason,
        },
        second_run: { run_id: joined.run.run_id, status: short(joined.run.status, 'RUN_STATUS_') },
        messages: messages.map(({ type, content }) => ({ type, content })),
      }),
    );
  } finally {
    threads.close();
    runs.close();
  }
}

// Prints a message the way the seed guide's prettyPrint does.
function prettyPrint(message) {
  const title = { human: 'Human Message', ai: 'Ai Message', tool: 'Tool Message' }[message.type];
  const padded = ` ${title || message.type} `;
  const side = Math.floor((80 - padded.length) / 2);
  console.log('='.repeat(side) + padded + '='.repeat(side + (padded.length % 2)));
  console.log('');
  if (message.content) console.log(message.content);
  for (const toolCall of message.tool_calls || []) {
    console.log(`Tool call: ${toolCall.name}(${JSON.stringify(toolCall.args)}) [${toolCall.id}]`);
  }
}

// --- errors ------------------------------------------------------------------------------
// Turnstile answers errors with a google.rpc.Status in the `grpc-status-details-bin` trailer,
// whose details hold a google.rpc.ErrorInfo {reason, domain, metadata}. grpc-js does not
// decode it, and the three messages are simple enough to read off the wire format directly.

// Returns [fieldNumber, value] pairs: numbers for varints, Buffers for length-delimited fields.
function wireFields(buffer) {
  const fields = [];
  let pos = 0;
  const varint = () => {
    let value = 0;
    for (let scale = 1; ; scale *= 128) {
      if (pos >= buffer.length) throw new Error('truncated varint');
      const byte = buffer[pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
    }
  };
  while (pos < buffer.length) {
    const key = varint();
    const [field, wireType] = [Math.floor(key / 8), key % 8];
    if (wireType === 0) fields.push([field, varint()]);
    else if (wireType === 2) {
      const length = varint();
      fields.push([field, buffer.subarray(pos, pos + length)]);
      pos += length;
    } else if (wireType === 1) pos += 8;
    else if (wireType === 5) pos += 4;
    else throw new Error(`unsupported wire type ${wireType}`);
  }
  return fields;
}

// Returns the ErrorInfo of a failed call as {reason, domain, metadata}, or null.
function errorInfo(error) {
  const [details] = error.metadata?.get('grpc-status-details-bin') ?? [];
  if (!details) return null;
  for (const [field, any] of wireFields(details)) {
    if (field !== 3) continue; // Status.details: repeated google.protobuf.Any
    const anyFields = new Map(wireFields(any)); // type_url = 1, value = 2
    if (!String(anyFields.get(1)).endsWith('/google.rpc.ErrorInfo')) continue;
    const info = { reason: '', domain: '', metadata: {} };
    for (const [infoField, value] of wireFields(anyFields.get(2) ?? Buffer.alloc(0))) {
      if (infoField === 1) info.reason = value.toString();
      else if (infoField === 2) info.domain = value.toString();
      else if (infoField === 3) {
        const entry = new Map(wireFields(value)); // map entry: key = 1, value = 2
        info.metadata[String(entry.get(1) ?? '')] = String(entry.get(2) ?? '');
      }
    }
    return info;
  }
  return null;
}

function describe(error) {
  if (typeof error.code !== 'number') return error.stack || String(error);
  const code = `${grpc.status[error.code]} (${error.code})`;
  let text = `${error.method ?? 'call'} failed: ${code}: ${error.details}`;
  try {
    const info = errorInfo(error);
    if (info) text += `; reason ${info.reason} ${JSON.stringify(info.metadata)}`;
  } catch (decodeError) {
    text += `; (unreadable status details: ${decodeError.message})`;
  }
  return text;
}

main().catch((error) => {
  console.error(describe(error));
  process.exitCode = 1;
});
