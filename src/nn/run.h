/* Internal: what the library's own forwards reach in a run context beyond the public API. */
#ifndef FUSEMAP_NN_RUN_H
#define FUSEMAP_NN_RUN_H

#include "core/threadpool.h"
#include "fusemap/nn.h"

/* The run context's pool (borrowed until fm_run_ctx_free). */
fm_threadpool *fm_run_pool(const fm_run_ctx *rc);

#endif
