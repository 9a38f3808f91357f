# fusemap — plain Makefile. `make` builds build/fusemap and the library; `make test` runs
# every test; `make demo` runs the main job on an embedded default. See README.md.

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

STATIC := $(BUILD)/libfusemap.a
# The shared library: the real file libfusemap.so.X.Y.Z with SONAME libfusemap.so.MAJOR, and the
# usual links libfusemap.so.MAJOR -> libfusemap.so.X.Y.Z, libfusemap.so -> libfusemap.so.MAJOR.
SONAME      := libfusemap.so.$(VERSION_MAJOR)
SHARED_REAL := $(BUILD)/libfusemap.so.$(VERSION)
SHARED      := $(BUILD)/libfusemap.so

.SECONDARY:

.PHONY: all test demo asan bench install clean deps tests benches examples tsan format

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
	$(CC) $(ALLFLAGS) -o $@ $(CLI_OBJ) $(STATIC) $(ALLLDFLAGS) $(LDLIBS)

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
benches: $(BENCH_BIN)
examples: $(EX_BIN)

# `make test`: install what is missing, build warning-free (-Werror), run every test.
test: deps
	@$(MAKE) --no-print-directory -j$$(nproc) all EXTRA_CFLAGS="-Werror $(EXTRA_CFLAGS)"
	@sh scripts/run_tests.sh $(BUILD)

# ASan+UBSan build in build-asan/, whole suite.
asan: deps
	@$(MAKE) --no-print-directory -j$$(nproc) tests BUILD=build-asan OPT="-O1" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  FM_TEST_QUICK=1 sh scripts/run_tests.sh build-asan

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

format:
	clang-format -i $$(find include src cli tests bench examples fuzz -name '*.[ch]')

clean:
	rm -rf build build-asan build-tsan build-fuzz
