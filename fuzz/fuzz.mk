# fuzz/fuzz.mk — libFuzzer harnesses, included by the top-level Makefile (which defines LIB_SRC,
# BUILD, ALLFLAGS, ALLLDFLAGS, LDLIBS, HDRS, STATIC, TSUP_OBJ). Every variable here starts with FUZZ_.
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="st_header config"]
#                      clang + ASan/UBSan/libFuzzer build in build-fuzz/, each harness run for
#                      FUZZ_SECONDS on a scratch copy of fuzz/corpus/<name>/ (scripts/fuzz.sh)
#   make fuzz-replay   replays every corpus with $(CC) and the normal flags ($(BUILD)/fuzz/replay_*)
#   make fuzz-seeds    regenerates the committed seeds (fuzz/gen_seeds.c) into fuzz/corpus/
# `make test` replays the corpora through tests/test_fuzz_replay.c (no clang needed).

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_NAMES   := $(sort $(patsubst fuzz/fuzz_%.c,%,$(filter-out fuzz/fuzz_common.c,$(wildcard fuzz/fuzz_*.c))))
FUZZ_HDRS    := $(HDRS) fuzz/fuzz_common.h
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = $(ALLFLAGS) $(FUZZ_SAN) -Ifuzz
FUZZ_OBJ     := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRC) fuzz/fuzz_common.c)
FUZZ_BIN     := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_NAMES))
FUZZ_COMMON  := $(BUILD)/obj/fuzz/fuzz_common.o
FUZZ_REPLAY  := $(patsubst %,$(BUILD)/fuzz/replay_%,$(FUZZ_NAMES))

.PHONY: fuzz fuzz-build fuzz-replay fuzz-seeds

# Library and helper objects with coverage instrumentation (no libFuzzer main).
$(FUZZ_BUILD)/obj/%.o: %.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_OBJ) $(FUZZ_HDRS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(ALLLDFLAGS) $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz:
	@FUZZ_SECONDS="$(FUZZ_SECONDS)" FUZZ_BUILD="$(FUZZ_BUILD)" MAKE="$(MAKE)" sh scripts/fuzz.sh $(FUZZ_TARGETS)

# Replay drivers: the normal compiler and flags, fuzz/replay_main.c instead of libFuzzer.
$(FUZZ_COMMON): fuzz/fuzz_common.h

$(BUILD)/fuzz/replay_%: fuzz/fuzz_%.c fuzz/replay_main.c $(FUZZ_COMMON) $(STATIC) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -Ifuzz -o $@ $< fuzz/replay_main.c $(FUZZ_COMMON) $(STATIC) $(ALLLDFLAGS) $(LDLIBS)

fuzz-replay: $(FUZZ_REPLAY)
	@for n in $(FUZZ_NAMES); do \
	  printf '%-12s ' "$$n"; $(BUILD)/fuzz/replay_$$n fuzz/corpus/$$n || { echo "fuzz-replay: $$n FAILED"; exit 1; }; \
	done

$(BUILD)/fuzz/gen_seeds: fuzz/gen_seeds.c $(FUZZ_COMMON) $(TSUP_OBJ) $(STATIC) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -Itests/support -Ifuzz -o $@ $< $(FUZZ_COMMON) $(TSUP_OBJ) $(STATIC) $(ALLLDFLAGS) $(LDLIBS)

fuzz-seeds: $(BUILD)/fuzz/gen_seeds
	$(BUILD)/fuzz/gen_seeds fuzz/corpus

# The replay test compiles the harnesses in (#include): rebuild it when they change.
$(BUILD)/tests/test_fuzz_replay: $(wildcard fuzz/*.c fuzz/*.h)
