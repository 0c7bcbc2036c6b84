// Recomputes vectors.json's `node` entries with Node itself: the IPN signature as NOWPayments'
// Node SDK (NowPaymentsIO/nowpayments-sdk-nodejs src/ipn.js) makes it: keys sorted at every
// level (arrays kept), JSON.stringify, HMAC-SHA512 keyed with the trimmed IPN secret, hex.
// Usage: node make_vectors.js SECRET FILE... (prints one JSON object per file)
const crypto = require('crypto');
const fs = require('fs');
const sorted = (v) => Array.isArray(v) ? v.map(sorted)
  : (v && typeof v === 'object') ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])]))
  : v;
const [secret, ...files] = process.argv.slice(2);
for (const file of files) {
  const form = JSON.stringify(sorted(JSON.parse(fs.readFileSync(file, 'utf8'))));
  const sig = crypto.createHmac('sha512', secret.trim()).update(form).digest('hex');
  console.log(JSON.stringify({ file, node_form: form, node_signature: sig }));
}
