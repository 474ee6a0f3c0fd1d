/* Streams made in a tool's process so that it runs in the state of a
 * server's process. PyTorch, for one, creates 32 streams per priority the
 * first time any side stream is used (a CUDA graph capture, a communication
 * library), and some small grids run at another speed in a process that
 * has made several streams (docs/perf-notes.md, sixteenth and eighteenth
 * sessions). kda-tune prewarm --streams N times its candidates after
 * making them; it did not change what the tuner picks, and the slower
 * state of a PyTorch server's process comes from its CUDA graph captures
 * instead (nineteenth session). */
#ifndef KDA_TOOLS_SERVER_STREAMS_H
#define KDA_TOOLS_SERVER_STREAMS_H

/* Creates n non-blocking streams on device `device`'s primary context (the
 * one libkda's contexts use), records an event on each, and keeps them
 * until the process exits. Returns 0, or -1 with the reason in why. */
int server_streams_make(int device, int n, char *why, size_t why_size);

#endif
