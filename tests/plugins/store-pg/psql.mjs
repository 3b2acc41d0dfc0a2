// tests/plugins/store-pg/psql.mjs - psql for the store-pg end-to-end tests:
// the SQL on stdin, psql variables (:'v1' ...) keep the values out of the
// SQL text; resolves with the unaligned, tuples-only output. The server is
// PGTEST_CONNINFO (tests/plugins/store-pg/pg-start.sh).
import { execFile } from 'node:child_process';

export function psql(sql, ...params) {
    const args = [process.env.PGTEST_CONNINFO, '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1'];
    params.forEach((p, i) => args.push('-v', `v${i + 1}=${p}`));
    return new Promise((resolve, reject) => {
        const child = execFile('psql', args, { timeout: 30000 }, (err, stdout, stderr) => {
            if (err) reject(new Error(`psql failed: ${stderr || err.message}`));
            else resolve(stdout.trim());
        });
        child.stdin.end(sql);
    });
}
