#include "CKeyrackSystem.h"

#if defined(__linux__)
#include <sys/random.h>

ssize_t keyrack_getrandom(void *buf, size_t len) {
    return getrandom(buf, len, 0);
}
#else
#include <stdlib.h>

ssize_t keyrack_getrandom(void *buf, size_t len) {
    arc4random_buf(buf, len);
    return (ssize_t)len;
}
#endif
