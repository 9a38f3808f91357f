# fusemap — plain Makefile. `make` builds build/fusemap and the library; `make test` runs
# every test; `make demo` runs the main job on an embedded default. See README.md.

CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION := 0.1.0

WARN     := -Wall -Wextra -Wpedantic -Wshadow
OPT      ?= -O2 -march=native
CFLAGS   ?= -g
ALLFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -ffp-contract=off -fPIC $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) \
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
SHARED := $(BUILD)/libfusemap.so

.SECONDARY:

.PHONY: all test demo asan bench install clean deps tests benches examples tsan format

all: $(BUILD)/fusemap $(SHARED) tests benches examples

deps:
	@sh scripts/deps.sh

$(BUILD)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(ALLLDFLAGS) $(LDLIBS)

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

tests: $(TEST_BIN) $(BUILD)/fusemap $(EX_BIN)
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
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/fusemap $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' fusemap.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/fusemap.pc

# Registry tests under ThreadSanitizer (the registries are the shared mutable state).
TSAN_TESTS := test_patch test_model_tree test_fusion
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
