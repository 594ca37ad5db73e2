// Writes docs/cache.md from two runs of the cache-tests suite (cleargate's and nginx's), classed
// the way the suite's own report classes them, with a reason for every test cleargate does not
// pass. Exits 1 when cleargate passes fewer tests than nginx, fails more, or fails one that nginx
// passes without a reason in the reasons file.
//
//   node report.mjs SUITE REASONS OUT NGINX_LABEL SUITE_VERSION CLEARGATE.json NGINX.json
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suite, reasonsFile, outFile, nginxLabel, suiteVersion, cgFile, ngFile] = process.argv.slice(2)
const lib = await import(pathToFileURL(path.join(suite, 'test-engine/lib/results.mjs')))
const suites = (await import(pathToFileURL(path.join(suite, 'tests/index.mjs')))).default
const classOf = Object.fromEntries(Object.entries(lib.resultTypes).map(([k, v]) => [v[0], k]))

// `id: reason` per line; an id ending in `*` covers every id it begins; `#` starts a comment.
const reasons = []
for (const line of fs.readFileSync(reasonsFile, 'utf8').split('\n')) {
  const t = line.trim()
  if (!t || t.startsWith('#')) continue
  const colon = t.indexOf(':')
  reasons.push([t.slice(0, colon).trim(), t.slice(colon + 1).trim()])
}
function reasonFor (id) {
  for (const [pat, why] of reasons) {
    if (pat === id || (pat.endsWith('*') && id.startsWith(pat.slice(0, -1)))) return why
  }
  return null
}

const tests = []
for (const s of suites) {
  for (const t of s.tests) tests.push({ id: t.id, suite: s.name, name: t.name, kind: t.kind || 'required' })
}
function classify (file) {
  const results = JSON.parse(fs.readFileSync(file, 'utf8'))
  const counts = {}
  const byId = {}
  for (const t of tests) {
    const cls = classOf[lib.determineTestResult(suites, t.id, results)[0]]
    counts[cls] = (counts[cls] || 0) + 1
    const r = results[t.id]
    byId[t.id] = { cls, detail: Array.isArray(r) ? String(r[1] || '') : '' }
  }
  return { counts, byId }
}
const cg = classify(cgFile)
const ng = classify(ngFile)
const failures = c => (c.fail || 0) + (c.optional_fail || 0) + (c.setup_fail || 0)
const good = cls => cls === 'pass' || cls === 'yes'
const bad = cls => cls === 'fail' || cls === 'optional_fail' || cls === 'setup_fail'

const rows = [
  ['pass', 'pass'], ['fail (required)', 'fail'], ['fail (optional)', 'optional_fail'],
  ['setup failed', 'setup_fail'], ['check: yes', 'yes'], ['check: no', 'no'],
  ['not run: a test it depends on failed', 'dependency_fail'], ['harness failure', 'harness_fail'],
  ['untested', 'untested']
]
const out = []
out.push('# cleargate\'s cache and the cache-tests suite', '')
out.push('The HTTP caching test suite ([http-tests/cache-tests](https://github.com/http-tests/cache-tests),',
  `version ${suiteVersion}) run against cleargate's cache and ${nginxLabel}'s \`proxy_cache\` (with`,
  '`proxy_cache_revalidate on`, as the suite\'s own image configures it), side by side, each in front',
  'of the suite\'s origin on loopback. Written by `interop/cache.sh`:', '',
  '    CACHE_TESTS=/path/to/cache-tests bash interop/cache.sh', '',
  'The suite is a tool for seeing how a cache behaves, not a conformance verdict; "optional" tests',
  'are what an optimal cache would do. "Failures" below counts required and optional failures and',
  'failed setups, as the suite\'s report does.', '')
out.push(`| result | cleargate | ${nginxLabel} |`, '| --- | ---: | ---: |')
for (const [label, cls] of rows) out.push(`| ${label} | ${cg.counts[cls] || 0} | ${ng.counts[cls] || 0} |`)
out.push(`| **failures** | **${failures(cg.counts)}** | **${failures(ng.counts)}** |`, '')

const lost = tests.filter(t => good(ng.byId[t.id].cls) && !good(cg.byId[t.id].cls))
const gained = tests.filter(t => good(cg.byId[t.id].cls) && !good(ng.byId[t.id].cls))
out.push(`cleargate passes ${gained.length} tests nginx does not, and does not pass ${lost.length} that nginx passes (each explained below).`, '')

out.push('## Every test cleargate does not pass, and why', '')
out.push(`| test | kind | cleargate | nginx | why |`, '| --- | --- | --- | --- | --- |')
const unexplained = []
const esc = s => s.replace(/\|/g, '\\|').replace(/\n/g, ' ')
for (const t of tests) {
  const c = cg.byId[t.id]
  const lostOne = good(ng.byId[t.id].cls) && !good(c.cls)
  if (!bad(c.cls) && !lostOne) continue
  const why = reasonFor(t.id)
  if (!why) unexplained.push(t.id)
  out.push(`| \`${t.id}\`: ${esc(t.name)} | ${t.kind} | ${c.cls} | ${ng.byId[t.id].cls} | ${esc(why || '**no reason written** (' + c.detail + ')')} |`)
}
out.push('')
out.push('## Tests nginx does not pass and cleargate does', '')
out.push(gained.map(t => `\`${t.id}\``).join(', ') || 'none', '')
fs.writeFileSync(outFile, out.join('\n'))

const summary = `cleargate: ${cg.counts.pass || 0} pass, ${failures(cg.counts)} failures; nginx: ${ng.counts.pass || 0} pass, ${failures(ng.counts)} failures`
console.log(`cache.sh: ${summary}; wrote ${outFile}`)
const problems = []
if ((cg.counts.pass || 0) < (ng.counts.pass || 0)) problems.push('fewer passes than nginx')
if (failures(cg.counts) > failures(ng.counts)) problems.push('more failures than nginx')
const lostUnexplained = lost.filter(t => !reasonFor(t.id)).map(t => t.id)
if (lostUnexplained.length) problems.push(`nginx passes these and no reason is written: ${lostUnexplained.join(', ')}`)
if (unexplained.length) console.log(`cache.sh: no reason written yet for: ${unexplained.join(', ')}`)
if (problems.length) {
  console.error(`cache.sh: ${problems.join('; ')}`)
  process.exit(1)
}
