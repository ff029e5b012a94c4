// Two tablets running the real WatermelonDB sync against a running Tandem server.
//
//   BASE_URL=http://127.0.0.1:8000 TOKEN_A=... DEVICE_A=... TOKEN_B=... UNIT_ID=... PRESEEDED_ID=... \
//     node sync_test.js
//   SCENARIO=first-sync-in-parts BASE_URL=... TOKEN_A=... TOKEN_B=... PRESEEDED_IDS=<id,id,...> node sync_test.js
//   (SCENARIO=held-versions with PRESEEDED_ID, SCENARIO=marked-deleted with PRESEEDED_IDS of two, likewise)
//
// Exits non-zero on the first failed expectation; prints one JSON line of what the Python
// test checks on the server side.
'use strict'

const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { Database, Model, appSchema, tableSchema } = require('@nozbe/watermelondb')
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default
const { synchronize } = require('@nozbe/watermelondb/sync')

const { BASE_URL, TOKEN_A, DEVICE_A, TOKEN_B, UNIT_ID, PRESEEDED_ID, PRESEEDED_IDS } = process.env

const common = [
  { name: 'unit_id', type: 'string', isOptional: true },
  { name: 'author_id', type: 'string', isOptional: true },
  { name: 'deleted', type: 'boolean' },
  { name: 'server_version', type: 'number' },
  { name: 'updated_at', type: 'number' },
]

const schema = appSchema({
  version: 1,
  tables: [
    tableSchema({
      name: 'encounters',
      columns: [
        ...common,
        { name: 'person_id', type: 'string', isOptional: true },
        { name: 'started_at', type: 'string' },
        { name: 'ended_at', type: 'string', isOptional: true },
        { name: 'location', type: 'string' },
        { name: 'assessment', type: 'string' },
        { name: 'disposition', type: 'string' },
      ],
    }),
    tableSchema({
      name: 'notes',
      columns: [
        ...common,
        { name: 'encounter_id', type: 'string' },
        { name: 'amends_id', type: 'string', isOptional: true },
        { name: 'body', type: 'string' },
        { name: 'signed_at', type: 'string', isOptional: true },
      ],
    }),
  ],
})

// Plain classes: no decorators, no build step.
class SyncedModel extends Model {
  get updatedAt() {
    return this._getRaw('updated_at')
  }
  get serverVersion() {
    return this._getRaw('server_version')
  }
  get deleted() {
    return this._getRaw('deleted')
  }
}

class Encounter extends SyncedModel {
  static table = 'encounters'
  get location() {
    return this._getRaw('location')
  }
  get assessment() {
    return this._getRaw('assessment')
  }
}

class Note extends SyncedModel {
  static table = 'notes'
  get body() {
    return this._getRaw('body')
  }
}

function tablet(name, token) {
  const adapter = new LokiJSAdapter({
    schema,
    dbName: name,
    useWebWorker: false,
    useIncrementalIndexedDB: true,
    extraLokiOptions: { autosave: false },
  })
  const database = new Database({ adapter, modelClasses: [Encounter, Note] })
  const headers = {
    Authorization: `Bearer ${token}`,
    'Content-Type': 'application/json',
    'Tandem-Sync-Protocol': '2',
    'Tandem-Client-Version': 'watermelon-test/1.0',
  }
  const seen = { pulls: [], pushes: [] }
  const duringPush = [] // what the user does while the next push is on its way
  async function sync({ pushOnly = false } = {}) {
    await synchronize({
      database,
      sendCreatedAsUpdated: true,
      // WatermelonDB merges a pulled record into a locally edited one column by column, and
      // would take the pulled server_version too: the edit would then claim a base it never
      // saw and silently overwrite the other writer. Keep the base the edit was made on, so
      // the server's three-way merge sees the collision.
      conflictResolver: (_table, local, _remote, resolved) => {
        if (local._status !== 'synced') resolved.server_version = local.server_version
        return resolved
      },
      pullChanges: async ({ lastPulledAt }) => {
        // A locked-out tablet cannot pull: nothing comes down, so that the push runs.
        if (pushOnly) return { changes: {}, timestamp: lastPulledAt }
        const url = `${BASE_URL}/api/v1/sync/watermelon/pull/?last_pulled_at=${lastPulledAt || ''}`
        const response = await fetch(url, { headers })
        if (!response.ok) throw Object.assign(new Error(`pull ${response.status}`), { answer: await response.json() })
        const body = await response.json()
        seen.pulls.push(body)
        return body
      },
      pushChanges: async ({ changes, lastPulledAt }) => {
        if (duringPush.length) await duringPush.shift()()
        const response = await fetch(`${BASE_URL}/api/v1/sync/watermelon/push/`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ changes, lastPulledAt }),
        })
        if (!response.ok) throw new Error(`push ${response.status}: ${await response.text()}`)
        const body = await response.json()
        seen.pushes.push(body)
        return { experimentalRejectedIds: body.experimentalRejectedIds }
      },
    })
  }
  // As the README says an app must: synchronize again while the last pull has more.
  async function syncUntilDone() {
    do await sync()
    while (seen.pulls[seen.pulls.length - 1].has_more)
  }
  return { database, sync, syncUntilDone, seen, headers, duringPush }
}

async function createEncounter(database, fields) {
  const id = crypto.randomUUID()
  await database.write(async () => {
    await database.get('encounters').create((record) => {
      record._raw.id = id
      record._setRaw('unit_id', UNIT_ID)
      record._setRaw('started_at', '2026-11-20T14:05:00Z')
      record._setRaw('disposition', '')
      record._setRaw('assessment', '')
      for (const [column, value] of Object.entries(fields)) record._setRaw(column, value)
    })
  })
  return id
}

async function createNote(database, encounterId, body) {
  const id = crypto.randomUUID()
  await database.write(async () => {
    await database.get('notes').create((record) => {
      record._raw.id = id
      record._setRaw('encounter_id', encounterId)
      record._setRaw('body', body)
    })
  })
  return id
}

async function edit(database, table, id, fields) {
  const record = await database.get(table).find(id)
  await database.write(async () => {
    await record.update((r) => {
      for (const [column, value] of Object.entries(fields)) r._setRaw(column, value)
    })
  })
}

async function markAsDeleted(database, table, id) {
  const record = await database.get(table).find(id)
  await database.write(() => record.markAsDeleted())
}

const find = (database, table, id) => database.get(table).find(id)
const pulledIds = (body, table) => (body.changes[table] ? body.changes[table].updated.map((raw) => raw.id) : [])

async function main() {
  const a = tablet('tablet-a', TOKEN_A)
  const b = tablet('tablet-b', TOKEN_B)

  // First sync brings what the server already has.
  await a.sync()
  await b.sync()
  assert.equal((await find(a.database, 'encounters', PRESEEDED_ID)).location, 'preseeded')
  assert.equal((await find(b.database, 'encounters', PRESEEDED_ID)).serverVersion, 1)

  // A documents offline, then syncs. Its own writes never come back to it as creations.
  const encounterId = await createEncounter(a.database, { location: 'Lenox Ave', assessment: 'Tearful.' })
  const noteId = await createNote(a.database, encounterId, 'Draft note.')
  await a.sync()
  await a.sync()
  const echo = a.seen.pulls[a.seen.pulls.length - 1]
  for (const table of Object.keys(echo.changes)) {
    assert.deepEqual(echo.changes[table].created, [], 'nothing comes back as created')
  }
  assert.ok(!pulledIds(echo, 'encounters').includes(encounterId), 'own write not echoed')
  assert.equal((await find(a.database, 'notes', noteId))._raw._status, 'synced')

  // B gets them.
  await b.sync()
  assert.equal((await find(b.database, 'encounters', encounterId)).location, 'Lenox Ave')
  assert.equal((await find(b.database, 'notes', noteId)).body, 'Draft note.')

  // Trap 2: one bad record (a note of an encounter that does not exist) does not fail the
  // push; it is rejected alone and the good change beside it applies.
  const orphanId = await createNote(a.database, crypto.randomUUID(), 'Orphan note.')
  await edit(a.database, 'encounters', encounterId, { disposition: 'referred' })
  await a.sync()
  const rejected = a.seen.pushes[a.seen.pushes.length - 1].experimentalRejectedIds
  assert.deepEqual(rejected, { notes: [orphanId] })
  assert.equal((await find(a.database, 'notes', orphanId))._raw._status, 'created', 'kept locally, unsynced')
  assert.equal((await find(a.database, 'encounters', encounterId))._raw._status, 'synced')

  // Same field, both offline: the second writer's text is kept as a conflict, and the
  // second tablet then receives the server's text (its write came back merged).
  await b.sync()
  await edit(a.database, 'encounters', PRESEEDED_ID, { assessment: 'A: calm now.' })
  await edit(b.database, 'encounters', PRESEEDED_ID, { assessment: 'B: still agitated.' })
  await a.sync()
  await b.sync()
  await b.sync()
  assert.equal((await find(b.database, 'encounters', PRESEEDED_ID)).assessment, 'A: calm now.')

  // Trap 1: A deletes an encounter (a clinical record: a flag, not a destroy) while B has
  // an unpushed edit of it. B's edit survives the pull and reaches the server.
  await edit(b.database, 'encounters', encounterId, { location: 'B: moved to clinic' })
  await edit(a.database, 'encounters', encounterId, { deleted: true })
  await a.sync()
  await b.sync()
  const onB = await find(b.database, 'encounters', encounterId)
  assert.equal(onB.deleted, true, 'B learns of the delete')
  assert.equal(onB.location, 'B: moved to clinic', 'B keeps its edit')

  // A adds to an encounter's assessment and then deletes the encounter, both before a sync:
  // one row carries the edit and the flag, and the edit reaches the server with the delete.
  const editedThenDeletedId = await createEncounter(a.database, { location: 'Park Ave' })
  await a.sync()
  await edit(a.database, 'encounters', editedThenDeletedId, { assessment: 'Written before the delete.' })
  await edit(a.database, 'encounters', editedThenDeletedId, { deleted: true })
  await a.sync()
  assert.equal((await find(a.database, 'encounters', editedThenDeletedId))._raw._status, 'synced')

  // A is revoked with a note written offline still in its outbox. Its pull is refused and
  // told to hand the outbox over first; the push takes it (kept for review, applied nowhere),
  // and only then does the tablet wipe what it holds.
  const lastNoteId = await createNote(a.database, PRESEEDED_ID, 'Written in the subway.')
  const revoked = await fetch(`${BASE_URL}/api/v1/devices/${DEVICE_A}/revoke/`, { method: 'POST', headers: a.headers })
  assert.equal(revoked.status, 200)
  const refusal = await a.sync().then(
    () => assert.fail('a revoked tablet may not pull'),
    (error) => error.answer,
  )
  assert.deepEqual([refusal.code, refusal.purge_local_data, refusal.push_outbox_first], ['device_revoked', true, true])
  await a.sync({ pushOnly: true })
  const handedOver = a.seen.pushes[a.seen.pushes.length - 1]
  assert.ok(handedOver.experimentalRejectedIds.notes.includes(lastNoteId), 'kept for review, not applied')
  assert.equal((await find(a.database, 'notes', lastNoteId))._raw._status, 'created', 'unsynced until the wipe')
  await a.database.write(() => a.database.unsafeResetDatabase())
  assert.equal(await a.database.get('notes').query().fetchCount(), 0, 'wiped')

  console.log(
    JSON.stringify({
      encounterId,
      noteId,
      orphanId,
      lastNoteId,
      editedThenDeletedId,
      pulls: a.seen.pulls.length + b.seen.pulls.length,
    }),
  )
}

// A first sync in parts (the server started with SYNC_WATERMELON_FIRST_SYNC_PART=2): A takes
// its first part, B writes a record meanwhile, and A's later parts and the feed after them
// bring every record once, none lost between parts.
async function firstSyncInParts() {
  const a = tablet('tablet-a', TOKEN_A)
  const b = tablet('tablet-b', TOKEN_B)
  const preseeded = PRESEEDED_IDS.split(',')

  await a.sync()
  assert.equal(a.seen.pulls[0].has_more, true, 'the first part says there is more')
  await b.syncUntilDone()
  const writtenMeanwhile = await createEncounter(b.database, { location: 'written between parts' })
  await b.sync()
  await a.syncUntilDone()
  await a.syncUntilDone()

  const held = await a.database.get('encounters').query().fetch()
  const heldIds = held.map((record) => record.id).sort()
  assert.deepEqual(heldIds, [...preseeded, writtenMeanwhile].sort(), 'every record, none lost between parts')
  assert.ok(held.every((record) => record.serverVersion === 1 && record._raw._status === 'synced'))
  console.log(
    JSON.stringify({
      writtenMeanwhile,
      partsOfA: a.seen.pulls.map((body) => body.has_more),
      recordsPerPull: a.seen.pulls.map((body) => pulledIds(body, 'encounters').length),
    }),
  )
}

// What A's edits of one record are merged against. A had changed the assessment when its sync
// pulled B's new location: WatermelonDB kept A's older server_version, and A's next edit, of
// the location it then showed (B's), is made on what A holds, so it applies. Then A's push of
// the assessment goes out while its user corrects the location, so the record stays changed;
// B amends A's assessment meanwhile. A's next sync pulls B's text but keeps its own (a changed
// column) and pushes it: the server keeps B's. A still shows its own text, and its user's
// rewrite of it meets B's as a conflict.
async function heldVersions() {
  const a = tablet('tablet-a', TOKEN_A)
  const b = tablet('tablet-b', TOKEN_B)
  const id = PRESEEDED_ID
  await a.syncUntilDone()
  await b.syncUntilDone()

  await edit(b.database, 'encounters', id, { location: 'B: 125th St' })
  await b.sync()
  await edit(a.database, 'encounters', id, { assessment: 'A: calm.' })
  await a.sync()
  const locationShownToA = (await find(a.database, 'encounters', id)).location
  await edit(a.database, 'encounters', id, { location: 'A: 125th St & Lexington Ave' })
  await a.sync()
  const locationEdit = a.seen.pushes[a.seen.pushes.length - 1].results.map((result) => result.status)

  await edit(a.database, 'encounters', id, { assessment: 'A: tearful, denies SI.' })
  a.duringPush.push(() => edit(a.database, 'encounters', id, { location: 'Lenox Ave & 116th St' }))
  await a.sync()
  const afterPush = (await find(a.database, 'encounters', id))._raw
  assert.equal(afterPush._status, 'updated', 'changed during the push: still to sync')
  await b.sync()
  await edit(b.database, 'encounters', id, { assessment: 'B: endorses SI with plan; do not leave alone.' })
  await b.sync()
  await a.sync()
  const assessmentShownToA = (await find(a.database, 'encounters', id)).assessment
  await edit(a.database, 'encounters', id, { assessment: 'A: tearful, denies SI. Calm at departure.' })
  await a.sync()
  const rewrite = a.seen.pushes[a.seen.pushes.length - 1].results.map((result) => result.status)
  console.log(JSON.stringify({ locationShownToA, locationEdit, assessmentShownToA, rewrite }))
}

// Deletes by markAsDeleted(), which sends only the record's id. A deletes a colleague's record
// it pulled, unchanged since: the delete applies. A deletes another one offline while B edits
// it; A's next sync pulls B's edit, which WatermelonDB passes over for a record it holds
// deleted, and pushes the delete with that pull's timestamp: the delete never saw the edit,
// and meets it as a conflict.
async function markedDeleted() {
  const a = tablet('tablet-a', TOKEN_A)
  const b = tablet('tablet-b', TOKEN_B)
  const [unchangedId, editedId] = PRESEEDED_IDS.split(',')
  await a.syncUntilDone()
  await b.syncUntilDone()

  await markAsDeleted(a.database, 'encounters', unchangedId)
  await a.sync()
  const unchanged = a.seen.pushes[a.seen.pushes.length - 1].results.map((result) => result.status)

  await markAsDeleted(a.database, 'encounters', editedId)
  await edit(b.database, 'encounters', editedId, { location: 'B: moved to clinic' })
  await b.sync()
  const pulls = a.seen.pulls.length
  await a.sync()
  const pulledWhileDeleted = pulledIds(a.seen.pulls[pulls], 'encounters').includes(editedId)
  const editedMeanwhile = a.seen.pushes[a.seen.pushes.length - 1].results.map((result) => result.status)
  console.log(JSON.stringify({ unchanged, pulledWhileDeleted, editedMeanwhile }))
}

const scenarios = {
  'first-sync-in-parts': firstSyncInParts,
  'held-versions': heldVersions,
  'marked-deleted': markedDeleted,
}
;(scenarios[process.env.SCENARIO] || main)().catch((error) => {
  console.error(error)
  process.exit(1)
})
