#!/usr/bin/perl
# `make mutation`: applies each entry of the mutation catalogue (every mutations.txt of the tree,
# format in docs/testing.md) alone to a scratch copy of the working tree, builds what the entry's
# tests need there and runs them through scripts/run_tests.sh with the entry's filter. A mutation
# is killed when a test fails. Prints a table and the kill rate; exits 1 when an entry survives,
# does not apply (its search string is missing or not unique: update the catalogue) or does not
# build. The working tree is never modified.
#   perl scripts/mutation.pl [WORD...]   only entries whose id contains one of the words
# Environment: M (same as the words), MUTATION_KEEP=1 keeps the scratch copy, J (test jobs),
# MUTATION_TIMEOUT (seconds per test binary, default 300).
use strict;
use warnings;
use File::Temp qw(tempdir);
use Time::HiRes qw(time);

my @words = @ARGV;
push @words, split /[\s,]+/, $ENV{M} if defined $ENV{M} && $ENV{M} ne '';
my $jobs = $ENV{J} || `nproc 2>/dev/null` || 2;
chomp $jobs;
my $timeout = $ENV{MUTATION_TIMEOUT} || 300;
my $t_start = time;

# ---- the catalogue ------------------------------------------------------------------------------
my @catalogues = sort grep { !m{^build} } split /\n/, `git ls-files -co --exclude-standard -- '*mutations.txt'`;
die "mutation: no mutations.txt in the tree\n" unless @catalogues;

my (@entries, %seen, @problems);
for my $cat (@catalogues) {
    open my $fh, '<', $cat or die "mutation: $cat: $!\n";
    (my $dir = $cat) =~ s{/?[^/]*$}{};
    my ($cur, $last_key);
    my $ln = 0;
    my $flush = sub {
        return unless $cur;
        for my $k (qw(file find tests why)) {
            push @problems, "$cat:$cur->{line}: [$cur->{id}] has no '$k:'" unless defined $cur->{$k};
        }
        $cur->{replace} = '' unless defined $cur->{replace};
        push @entries, $cur;
        undef $cur;
    };
    while (my $l = <$fh>) {
        $ln++;
        chomp $l;
        next if $l =~ /^\s*#/;
        if ($l =~ /^\[([A-Za-z0-9_.-]+)\]\s*$/) {
            $flush->();
            push @problems, "$cat:$ln: id [$1] used twice" if $seen{$1}++;
            $cur = {id => $1, catalogue => $cat, dir => $dir, line => $ln};
            undef $last_key;
        } elsif ($l =~ /^\s*$/) {
            undef $last_key;
        } elsif (!$cur) {
            push @problems, "$cat:$ln: text outside an entry";
        } elsif ($l =~ /^\|(.*)$/ && $last_key) {    # continuation: a newline, then the text
            $cur->{$last_key} .= "\n$1";
        } elsif ($l =~ /^(file|find|replace|tests|why):(?: (.*))?$/) {
            $cur->{$1} = defined $2 ? $2 : '';
            $last_key = $1;
        } else {
            push @problems, "$cat:$ln: cannot read '$l' (fields: file, find, replace, tests, why)";
        }
    }
    $flush->();
}
if (@words) {
    @entries = grep { my $id = $_->{id}; grep { index($id, $_) >= 0 } @words } @entries;
    die "mutation: no entry matches '@words'\n" unless @entries;
}

# Each entry must apply: its file exists and holds the search string exactly once.
my %orig;
for my $e (@entries) {
    $e->{path} = $e->{dir} eq '' ? $e->{file} : "$e->{dir}/$e->{file}";
    unless (-f $e->{path}) {
        $e->{result} = 'NO FILE';
        push @problems, "[$e->{id}] ($e->{catalogue}): file $e->{path} does not exist: update the catalogue";
        next;
    }
    $orig{$e->{path}} //= do { local $/; open my $f, '<', $e->{path} or die "$e->{path}: $!\n"; <$f> };
    my $n = () = $orig{$e->{path}} =~ /\Q$e->{find}\E/g;
    if ($n != 1) {
        $e->{result} = $n ? 'NOT UNIQUE' : 'NO MATCH';
        push @problems, "[$e->{id}] ($e->{catalogue}): the search string is " .
            ($n ? "found $n times in $e->{path}: make it unique" : "not in $e->{path}: the code moved, update the catalogue");
    }
    if ($e->{find} eq $e->{replace}) {
        $e->{result} = 'NO CHANGE';
        push @problems, "[$e->{id}]: replacement equals the search string";
    }
}

# ---- scratch copy ------------------------------------------------------------------------------
my $scratch = tempdir("fusemap-mutation-XXXXXX", TMPDIR => 1, CLEANUP => !$ENV{MUTATION_KEEP});
system("git ls-files -z -co --exclude-standard | perl -0ne 'print if -e substr(\$_, 0, -1)' | "
     . "tar --null -T - -cf - | tar -xf - -C '$scratch'") == 0 or die "mutation: cannot copy the tree\n";
print "mutation: scratch copy in $scratch (" . scalar(@entries) . " entries from " . scalar(@catalogues) . " catalogues)\n";

sub sh_quote { my $s = shift; $s =~ s/'/'\\''/g; return "'$s'" }

# Builds the binaries the filter needs (no -Werror: a mutant may leave an unused variable).
sub build {
    my ($filter, $log) = @_;
    return system("cd '$scratch' && make -j$jobs --no-print-directory tests-selected T=" . sh_quote($filter)
                  . " > '$log' 2>&1") == 0;
}

# Runs the filtered tests; returns (ok, names of failing binaries).
sub run_tests {
    my ($filter, $log) = @_;
    my $rc = system("cd '$scratch' && T=" . sh_quote($filter) . " J=$jobs TEST_TIMEOUT=$timeout "
                    . "sh scripts/run_tests.sh build > '$log' 2>&1");
    open my $f, '<', $log;
    my @failed = map { /^FAIL (test_\w+)/ ? $1 : () } <$f>;
    return ($rc == 0, @failed);
}

sub put { my ($path, $text) = @_; open my $f, '>', "$scratch/$path" or die "$path: $!\n"; print $f $text; close $f }

# Baseline: every filter the entries use passes on the unmutated copy (else nothing means anything).
my %filters = map { $_->{tests} => 1 } grep { !$_->{result} } @entries;
my $all = join ',', sort keys %filters;
if ($all ne '') {
    my $t0 = time;
    build($all, "$scratch/baseline-build.log") or die "mutation: the unmutated tree does not build (see $scratch/baseline-build.log)\n";
    my ($ok, @failed) = run_tests($all, "$scratch/baseline-tests.log");
    die "mutation: the unmutated tree fails @failed (see $scratch/baseline-tests.log); fix that first\n" unless $ok;
    printf "mutation: baseline builds and passes (%.0fs)\n", time - $t0;
}

# ---- one mutation at a time ---------------------------------------------------------------------
my $i = 0;
for my $e (@entries) {
    $i++;
    next if $e->{result};
    my $t0 = time;
    (my $mut = $orig{$e->{path}}) =~ s/\Q$e->{find}\E/$e->{replace}/;
    put($e->{path}, $mut);
    my $log = "$scratch/$e->{id}";
    if (!build($e->{tests}, "$log.build.log")) {
        $e->{result} = 'BUILD FAILED';
        push @problems, "[$e->{id}]: the mutant does not build (see $log.build.log): a mutation must compile";
    } else {
        my ($ok, @failed) = run_tests($e->{tests}, "$log.tests.log");
        $e->{result} = $ok ? 'SURVIVED' : 'killed';
        $e->{by} = join ' ', @failed;
        push @problems, "[$e->{id}] SURVIVED: $e->{why} ($e->{path}; tests '$e->{tests}' all passed)" if $ok;
    }
    put($e->{path}, $orig{$e->{path}});
    $e->{secs} = time - $t0;
    printf "%3d/%d %-38s %-8s %5.1fs %s\n", $i, scalar(@entries), $e->{id}, $e->{result}, $e->{secs},
        $e->{by} ? "by $e->{by}" : '';
}

# ---- report -------------------------------------------------------------------------------------
print "\n";
printf "%-38s %-34s %-12s %s\n", 'mutation', 'file', 'result', 'killed by / what it breaks';
for my $e (@entries) {
    printf "%-38s %-34s %-12s %s\n", $e->{id}, $e->{path}, $e->{result} // '?',
        $e->{result} && $e->{result} eq 'killed' ? $e->{by} : $e->{why};
}
my $killed = grep { ($_->{result} // '') eq 'killed' } @entries;
my $n = @entries;
printf "\nmutation: %d/%d killed (kill rate %.1f%%) in %.0fs\n", $killed, $n, $n ? 100.0 * $killed / $n : 0, time - $t_start;
if (@problems) {
    print "mutation: FAILED\n";
    print "  $_\n" for @problems;
    exit 1;
}
exit 0;
