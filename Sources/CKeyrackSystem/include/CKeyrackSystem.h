#ifndef C_KEYRACK_SYSTEM_H
#define C_KEYRACK_SYSTEM_H

#include <stddef.h>
#include <sys/types.h>

/// Fills buf with len bytes from the kernel CSPRNG (getrandom(2) on Linux).
/// Returns the number of bytes written, or -1 with errno set.
ssize_t keyrack_getrandom(void *buf, size_t len);

#endif
