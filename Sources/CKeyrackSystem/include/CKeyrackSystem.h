#ifndef C_KEYRACK_SYSTEM_H
#define C_KEYRACK_SYSTEM_H

#include <stddef.h>
#include <sys/types.h>

/// Fills buf with len bytes from the kernel CSPRNG (getrandom(2) on Linux).
/// Returns the number of bytes written, or -1 with errno set.
ssize_t keyrack_getrandom(void *buf, size_t len);

/// Starts the program at `path` with `argv` and `envp` (both NULL-terminated)
/// so that the child's descriptor i is the parent's `fds[i]` for i in
/// 0..<count, and every other descriptor is closed in the child: secrets go
/// to a child through pipes it inherits, never through its arguments, and
/// nothing else of the parent leaks into it. Returns 0 and sets `*pid`, or
/// an errno value.
int keyrack_spawn(const char *path, char *const argv[], char *const envp[], const int *fds, int count, pid_t *pid);

/// pipe2(fds, O_CLOEXEC): a pipe whose ends no child inherits unless placed by keyrack_spawn.
int keyrack_pipe(int fds[2]);

#endif
