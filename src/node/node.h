/* node.h — the daemon's own entry points, shared between src/node files. */
#ifndef LLMLIMIT_NODE_NODE_H
#define LLMLIMIT_NODE_NODE_H

/* Writes a new random 32-byte cluster key (64 hex digits and a newline) to path, mode 0600,
 * refusing to overwrite an existing file. Returns the process exit code. */
int node_keygen(const char *path);

#endif
