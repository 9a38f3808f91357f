# fusemap — plain Makefile. `make` builds build/fusemap and the library; `make test` runs
# every test; `make demo` runs the main job on an embedded default. See README.md.
#   make test [T=word[,word...]] [J=jobs] [TEST_TIMEOUT=seconds]
#       T: build and run only the test binaries whose names contain one of the words
#       (make test T=fusion); J: binaries run at once (default: cores); TEST_TIMEOUT: seconds
#       one binary may run (default 300). docs/testing.md has the details.
#   make format / make format-check   clang-format the tree / check it is formatted
#   make mutation [M=id-or-word]      the mutation catalogue (docs/testing.md), not part of test

CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=

# The version lives in include/fusemap/version.h only; read it from there.
VERSION_H := include/fusemap/version.h
version_part = $(shell sed -n 's/^.define FM_VERSION_$(1)  *\([0-9][0-9]*\).*/\1/p' $(VERSION_H))
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION_MINOR := $(call version_part,MINOR)
VERSION_PATCH := $(call version_part,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
ifeq ($(words $(VERSION_MAJOR) $(VERSION_MINOR) $(VERSION_PATCH)),3)
else
$(error cannot read FM_VERSION_MAJOR/MINOR/PATCH from $(VERSION_H))
endif

WARN     := -Wall -Wextra -Wpedantic -Wshadow
OPT      ?= -O2 -march=native
CFLAGS   ?= -g
ALLFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -ffp-contract=off -fPIC -fvisibility=hidden $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) \
            -Iinclude -Isrc
LDLIBS   := -ljansson -lpcre2-8 -lutf8proc -lopenblas -lpng -ljpeg -lm -lpthread
# The CLI alone links the HTTP server library (`fusemap serve`); the library never does.
CLI_LDLIBS := -lmicrohttpd
LDFLAGS  ?=
ALLLDFLAGS := $(LDFLAGS) $(EXTRA_LDFLAGS)

LIB_SRC   := $(sort $(shell find src -name '*.c'))
LIB_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
CLI_SRC   := $(sort $(wildcard cli/*.c))
CLI_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(CLI_SRC))
TSUP_SRC  := $(sort $(wildcard tests/support/*.c))
TSUP_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(TSUP_SRC))
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
TEST_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
EX_SRC    := $(sort $(wildcard examples/*.c))
EX_BIN    := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EX_SRC))
HDRS      := $(shell find include src tests/support -name '*.h' 2>/dev/null)
# T: test name filter (words separated by spaces or commas; a binary matches when its name
# contains one of them). TEST_SEL: the binaries `make test` builds and runs.
T         ?=
comma     := ,
T_WORDS   := $(subst $(comma), ,$(T))
TEST_SEL  := $(if $(strip $(T)),$(foreach b,$(TEST_BIN),$(if $(strip $(foreach w,$(T_WORDS),$(findstring $(w),$(notdir $(b))))),$(b))),$(TEST_BIN))
RUN_TESTS  = T="$(T)" J="$(J)" TEST_TIMEOUT="$(TEST_TIMEOUT)" sh scripts/run_tests.sh

STATIC := $(BUILD)/libfusemap.a
# The shared library: the real file libfusemap.so.X.Y.Z with SONAME libfusemap.so.MAJOR, and the
# usual links libfusemap.so.MAJOR -> libfusemap.so.X.Y.Z, libfusemap.so -> libfusemap.so.MAJOR.
SONAME      := libfusemap.so.$(VERSION_MAJOR)
SHARED_REAL := $(BUILD)/libfusemap.so.$(VERSION)
SHARED      := $(BUILD)/libfusemap.so

.SECONDARY:

.PHONY: all test demo asan bench install clean deps tests benches examples tsan format format-check \
        tests-selected mutation

all: $(BUILD)/fusemap $(SHARED) tests benches examples

deps:
	@sh scripts/deps.sh

# Header dependencies come from the compiler (-MMD): a header change rebuilds only its users.
$(BUILD)/obj/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -MMD -MP -c $< -o $@

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHARED_REAL): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(ALLLDFLAGS) $(LDLIBS)

$(BUILD)/$(SONAME): $(SHARED_REAL)
	ln -sf $(notdir $<) $@

$(SHARED): $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(BUILD)/fusemap: $(CLI_OBJ) $(STATIC)
	$(CC) $(ALLFLAGS) -o $@ $(CLI_OBJ) $(STATIC) $(ALLLDFLAGS) $(CLI_LDLIBS) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(TSUP_OBJ) $(STATIC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -Itests/support -o $@ $< $(TSUP_OBJ) $(STATIC) $(ALLLDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(TSUP_OBJ) $(STATIC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -Itests/support -o $@ $< $(TSUP_OBJ) $(STATIC) $(ALLLDFLAGS) $(LDLIBS)

$(BUILD)/examples/%: examples/%.c $(STATIC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -o $@ $< $(STATIC) $(ALLLDFLAGS) $(LDLIBS)

# The shared library too: tests check its SONAME and what `make install` does with it.
tests: $(TEST_BIN) $(BUILD)/fusemap $(EX_BIN) $(SHARED)
tests-selected: $(TEST_SEL) $(BUILD)/fusemap $(EX_BIN) $(SHARED)
benches: $(BENCH_BIN)
examples: $(EX_BIN)

# `make test`: install what is missing, build warning-free (-Werror), run every test (with T,
# build and run only the matching ones).
test: deps
	@$(MAKE) --no-print-directory -j$$(nproc) $(if $(strip $(T)),tests-selected,all) \
	  EXTRA_CFLAGS="-Werror $(EXTRA_CFLAGS)"
	@$(RUN_TESTS) $(BUILD)

# ASan+UBSan build in build-asan/, whole suite (T filters here too).
asan: deps
	@$(MAKE) --no-print-directory -j$$(nproc) tests-selected BUILD=build-asan OPT="-O1" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  FM_TEST_QUICK=1 $(RUN_TESTS) build-asan

demo: deps
	@$(MAKE) --no-print-directory -j$$(nproc) $(BUILD)/fusemap $(BUILD)/bench/gen_checkpoint $(BUILD)/bench/fusion
	@sh scripts/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory benches
	@sh scripts/bench.sh $(BUILD)

install: $(STATIC) $(SHARED) $(BUILD)/fusemap
	install -d $(DESTDIR)$(PREFIX)/include/fusemap $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/fusemap/*.h $(DESTDIR)$(PREFIX)/include/fusemap/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED_REAL) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libfusemap.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libfusemap.so
	install -m 755 $(BUILD)/fusemap $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' fusemap.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/fusemap.pc

# Registry tests under ThreadSanitizer (the registries are the shared mutable state).
TSAN_TESTS := test_patch test_model_tree test_fusion test_vision_forward
tsan: deps
	@$(MAKE) --no-print-directory $(addprefix build-tsan/tests/,$(TSAN_TESTS)) BUILD=build-tsan OPT="-O1" \
	  EXTRA_CFLAGS="-fsanitize=thread" EXTRA_LDFLAGS="-fsanitize=thread"
	@set -e; for t in $(TSAN_TESTS); do echo "tsan: $$t"; TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  FM_TEST_QUICK=1 ./build-tsan/tests/$$t > build-tsan/tests/$$t.out 2> build-tsan/tests/$$t.log \
	  || { tail -n 40 build-tsan/tests/$$t.log; exit 1; }; done; echo "tsan: clean"

-include fuzz/fuzz.mk

FORMAT_SRC = $$(find include src cli tests bench examples fuzz -name '*.[ch]' | sort)
format:
	clang-format -i $(FORMAT_SRC)

# Fails (and names the files) when clang-format would change anything; .ci/run calls it.
format-check:
	@clang-format --dry-run -Werror $(FORMAT_SRC) && echo "format-check: every file is formatted"

# Mutation testing (docs/testing.md): every entry of the catalogue (mutations/*.txt) applied
# alone to a scratch copy of the tree, the tests it names run; fails when one survives.
mutation:
	@M="$(M)" perl scripts/mutation.pl

clean:
	rm -rf build build-asan build-tsan build-fuzz
