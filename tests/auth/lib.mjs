// tests/auth/lib.mjs - what the tests of tests/suites/37-auth.sh share: a
// POST of a JSON body from a chosen local address (each attacker and each
// group of members has its own 127.0.0.N), answering {status, retryAfter, json}.

import http from 'node:http';
import { BASE } from '../e2e/lib.mjs';

const url = new URL(BASE);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

/* POST a JSON body from a given local address: {status, retryAfter, json} */
export function post(path, body, localAddress) {
    return new Promise((resolve, reject) => {
        const data = JSON.stringify(body);
        const req = http.request(
            {
                host: url.hostname,
                port: url.port,
                path,
                method: 'POST',
                localAddress,
                agent,
                headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) },
            },
            (res) => {
                let text = '';
                res.setEncoding('utf8');
                res.on('data', (d) => (text += d));
                res.on('end', () => {
                    let json = null;
                    try {
                        json = JSON.parse(text);
                    } catch {
                        json = undefined;
                    }
                    resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'], json });
                });
            },
        );
        req.on('error', reject);
        req.end(data);
    });
}
