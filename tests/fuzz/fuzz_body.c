/*
 * fuzz_body.c - libFuzzer target for the quick reading of a STOMP SEND's
 * JSON body (plugins/transport-ws/stomp_body.c), any bytes a client sends:
 * whatever it takes, json-c's strict reading (the one it stands in for,
 * tests/lib/body_oracle.h) takes too, with the same roomId, message and
 * upTo; what it declines goes to json-c in the server, so a decline is
 * never wrong, only slower.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "body_oracle.h"
#include "fuzz_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[512];
    int taken;
    const char *r = body_oracle_check((const char *)data, size, &taken, why, sizeof(why));
    FZ_CHECK(!r, "%s: %.*s", r, (int)(size < 300 ? size : 300), (const char *)data);
    return 0;
}
