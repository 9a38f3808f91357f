/* fusemap: load Hugging Face checkpoints, fuse submodules at load time, run, save back.
 * The umbrella header: includes every subsystem's public header. */
#ifndef FUSEMAP_FUSEMAP_H
#define FUSEMAP_FUSEMAP_H

#include "fusemap/chat.h"
#include "fusemap/core.h"
#include "fusemap/fusion.h"
#include "fusemap/generate.h"
#include "fusemap/image.h"
#include "fusemap/io.h"
#include "fusemap/loading.h"
#include "fusemap/models.h"
#include "fusemap/nn.h"
#include "fusemap/qwen2_vl.h"
#include "fusemap/qwen3_vl.h"
#include "fusemap/tensor.h"
#include "fusemap/tokenizer.h"
#include "fusemap/version.h"

#endif
