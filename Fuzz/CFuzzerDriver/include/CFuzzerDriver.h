#ifndef KEYRACK_CFUZZERDRIVER_H
#define KEYRACK_CFUZZERDRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry point for programs that have their own main (SwiftPM
/// renames an executable's main, so AttestationFuzz calls this from it).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));

#endif
