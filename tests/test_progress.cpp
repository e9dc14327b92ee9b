// The progress bar (src/core/progress.h): formatting of bytes, rates and times left, the rendered
// line, and that it stays silent when not asked to draw (stderr not a terminal).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "core/progress.h"

namespace llamarun {
namespace {

TEST(Progress, FormatBytes) {
  EXPECT_EQ(Progress::format_bytes(0), "0 B");
  EXPECT_EQ(Progress::format_bytes(512), "512 B");
  EXPECT_EQ(Progress::format_bytes(999), "999 B");
  EXPECT_EQ(Progress::format_bytes(1000), "0.98 KiB");  // never "1000 B": the unit switches first
  EXPECT_EQ(Progress::format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(Progress::format_bytes(10 * 1024 + 512), "10.5 KiB");
  EXPECT_EQ(Progress::format_bytes(1048575), "1.00 MiB");  // 1023.999 KiB rounds up a unit
  EXPECT_EQ(Progress::format_bytes(123.0 * 1024 * 1024), "123 MiB");
  EXPECT_EQ(Progress::format_bytes(13.5 * 1024 * 1024 * 1024), "13.5 GiB");
  EXPECT_EQ(Progress::format_bytes(2.0 * 1024 * 1024 * 1024 * 1024), "2.00 TiB");
  EXPECT_EQ(Progress::format_bytes(-1), "? B");
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(Progress::format_duration(0), "0:00");
  EXPECT_EQ(Progress::format_duration(7.4), "0:07");
  EXPECT_EQ(Progress::format_duration(59.6), "1:00");
  EXPECT_EQ(Progress::format_duration(754), "12:34");
  EXPECT_EQ(Progress::format_duration(3723), "1:02:03");
  EXPECT_EQ(Progress::format_duration(-1), "--:--");
  EXPECT_EQ(Progress::format_duration(1.0 / 0.0), "--:--");
}

TEST(Progress, RenderBytesWithBarRateAndEta) {
  // 1 GiB of 4 GiB after 2 s: 512 MiB/s, 3 GiB left = 6 s.
  const uint64_t GiB = 1ull << 30;
  std::string line = Progress::render("loading", GiB, 4 * GiB, 2.0, Progress::Unit::kBytes, 100);
  // The bar is 30 columns at most: 25% of it is 7 full.
  EXPECT_EQ(line, "loading [" + std::string(7, '#') + std::string(23, '.') +
                      "]   25%  1.00 GiB / 4.00 GiB  512 MiB/s  ETA 0:06");
  EXPECT_LT(line.size(), 100u);
}

TEST(Progress, RenderFitsNarrowTerminals) {
  const uint64_t GiB = 1ull << 30;
  std::string line = Progress::render("loading", GiB, 4 * GiB, 2.0, Progress::Unit::kBytes, 50);
  EXPECT_EQ(line.find('['), std::string::npos);                      // no room for a bar of 10 columns
  EXPECT_EQ(line, "loading   25%  1.00 GiB / 4.00 GiB  512 MiB/s");  // cut at a space, within 49
  EXPECT_LE(line.size(), 49u);
}

TEST(Progress, RenderUnknownTotalAndNoRateYet) {
  EXPECT_EQ(Progress::render("copy", 3 * 1024 * 1024, 0, 61, Progress::Unit::kBytes, 80),
            "copy  3.00 MiB  50.4 KiB/s  elapsed 1:01");
  // Nothing done yet: the time left is unknown.
  EXPECT_EQ(Progress::render("copy", 0, 1000, 0, Progress::Unit::kBytes, 0),
            "copy    0%  0 B / 0.98 KiB  0 B/s  ETA --:--");
}

TEST(Progress, RenderCounts) {
  EXPECT_EQ(Progress::render("bench", 3, 12, 6.0, Progress::Unit::kCount, 100),
            "bench [" + std::string(7, '#') + std::string(23, '.') + "]   25%  3 / 12  0.50/s  ETA 0:18");
  EXPECT_EQ(Progress::render_final("bench", 12, 24.0, Progress::Unit::kCount), "bench: 12 in 0:24 (0.50/s)");
  EXPECT_EQ(Progress::render_final("upload", 3ull << 30, 1.5, Progress::Unit::kBytes),
            "upload: 3.00 GiB in 1.5 s (2.00 GiB/s)");
}

TEST(Progress, SilentWhenOffAndDrawsWhenOn) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("quiet", 100, Progress::Unit::kBytes, Progress::Mode::kAuto, f);  // a file is no terminal
    EXPECT_FALSE(p.enabled());
    p.add(50);
    p.add(50);
    EXPECT_EQ(p.done(), 100u);
  }
  EXPECT_EQ(std::ftell(f), 0);
  {
    Progress p("loud", 100, Progress::Unit::kBytes, Progress::Mode::kOn, f);
    p.add(40);
    p.finish();
    p.finish();  // idempotent
  }
  std::rewind(f);
  char buf[512] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string out(buf, n);
  EXPECT_EQ(out.front(), '\r');
  EXPECT_NE(out.find("loud ["), std::string::npos);
  EXPECT_NE(out.find(" 40%  40 B / 100 B"), std::string::npos);
  EXPECT_NE(out.find("\rloud: 40 B in "), std::string::npos);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
}

}  // namespace
}  // namespace llamarun
