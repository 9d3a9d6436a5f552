// Makes keys and signed JWTs for the jwt-auth specs with node's own crypto (an implementation independent of
// the gateway's mbedTLS checks).
//   node jwt_tool.js keys DIR                 -> DIR/rsa.pem, rsa.pub.pem, ec.pem, ec.pub.pem, ec384.pem, ec384.pub.pem,
//                                                and DIR/jwks.json (the public keys as JWKs, kids rsa1 / ec1)
//   node jwt_tool.js sign ALG KEY CLAIMS [KID] -> the token on stdout; KEY: a PEM file (RS*/ES*) or the secret (HS*)
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const HASH = { 256: 'sha256', 384: 'sha384', 512: 'sha512' };

function sign(alg, key, claims, kid) {
  const header = { alg, typ: 'JWT' };
  if (kid) header.kid = kid;
  const input = b64url(JSON.stringify(header)) + '.' + b64url(JSON.stringify(claims));
  const hash = HASH[alg.slice(2)];
  let sig;
  if (alg.startsWith('HS')) {
    sig = crypto.createHmac(hash, key).update(input).digest();
  } else {
    const pem = fs.readFileSync(key);
    sig = crypto.sign(hash, Buffer.from(input), alg.startsWith('ES') ? { key: pem, dsaEncoding: 'ieee-p1363' } : pem);
  }
  return input + '.' + b64url(sig);
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'keys') {
  const dir = args[0];
  const out = (name, pair) => {
    fs.writeFileSync(path.join(dir, name + '.pem'), pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    fs.writeFileSync(path.join(dir, name + '.pub.pem'), pair.publicKey.export({ type: 'spki', format: 'pem' }));
    return pair.publicKey.export({ format: 'jwk' });
  };
  const rsa = out('rsa', crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }));
  const ec = out('ec', crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }));
  out('ec384', crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }));
  fs.writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [
    Object.assign({ kid: 'rsa1', use: 'sig' }, rsa), Object.assign({ kid: 'ec1', use: 'sig' }, ec)] }));
} else if (cmd === 'sign') {
  process.stdout.write(sign(args[0], args[1], JSON.parse(args[2]), args[3]));
} else {
  console.error('usage: jwt_tool.js keys DIR | sign ALG KEY CLAIMS [KID]');
  process.exit(2);
}
