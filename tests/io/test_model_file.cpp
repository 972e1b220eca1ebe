#include "core/random.hpp"
#include "../common/scratch_dir.hpp"
#include "io/checksum.hpp"
#include "io/fuzz_entry.hpp"
#include "io/json.hpp"
#include "io/model_file.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

using namespace flt::io;
using flt::ModelFileError;
using nlohmann::json;

namespace {

ModelFile sample_file() {
  ModelFile f;
  f.set_metadata("targets", "U0,gap");
  f.set_metadata("units", "eV,eV");
  f.set_metadata("title", "caf\xC3\xA9 \"quoted\"\nline");
  f.set_tensor("encoder.0.weight", Tensor(std::vector<float>{1.5f, -2.f, 3.25f, 0.f, -0.f, 1e-30f}, Shape{2, 3}));
  f.set_tensor("reference_energies", Tensor::vector(std::vector<double>{-0.5, 1e300, std::numeric_limits<double>::denorm_min()}));
  f.set_tensor("elements", Tensor::vector(std::vector<std::int64_t>{1, 6, 7, 8, 9, -3}));
  f.set_tensor("counts", Tensor::vector(std::vector<std::int32_t>{7, -7}));
  f.set_tensor("mask", Tensor(std::vector<std::uint8_t>{0, 1, 255}, Shape{3, 1}));
  f.set_tensor("scalar", Tensor::scalar(2.5));
  f.set_tensor("empty", Tensor(std::vector<float>{}, Shape{0, 4}));
  return f;
}

std::uint64_t header_length(const std::string& bytes) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  return n;
}

// Builds a file from a header (without checksum) and data, stamping the correct checksum, so each
// test below exercises exactly one validation rule.
std::string craft(json header, const std::string& data) {
  json meta = header.contains("__metadata__") ? header["__metadata__"] : json::object();
  meta.erase("checksum_crc32");
  header["__metadata__"] = meta;
  std::uint32_t crc = crc32(dump_json(header));
  crc = crc32_update(crc, data.data(), data.size());
  meta["checksum_crc32"] = hex32(crc);
  header["__metadata__"] = meta;
  std::string text = dump_json(header);
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
  return out + text + data;
}

json tensor_info(const char* dtype, std::vector<std::uint64_t> shape, std::uint64_t begin, std::uint64_t end) {
  return {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

json base_header(const char* version = "1") {
  return {{"__metadata__", {{"format", "flt-model"}, {"format_version", version}}}};
}

std::string expect_error(const std::string& bytes) {
  try {
    parse_model_file(bytes, "crafted.flt");
  } catch (const ModelFileError& e) {
    CHECK(e.path() == "crafted.flt");
    return e.what();
  }
  FAIL("parse_model_file accepted an invalid file");
  return {};
}

}  // namespace

TEST_CASE("model file round trip keeps every dtype, shape and metadata entry bit-exactly", "[train][model_file]") {
  flt::test_support::ScratchDir dir("mf");
  const ModelFile f = sample_file();
  const auto path = dir / "model.flt";
  write_model_file(path, f);
  const ModelFile g = read_model_file(path);
  CHECK(g == f);
  CHECK(g.source() == path.string());
  CHECK(g.metadata("title") == "caf\xC3\xA9 \"quoted\"\nline");
  CHECK(std::signbit(g.values<float>("encoder.0.weight", Shape{2, 3})[4]));
  CHECK(g.values<double>("reference_energies")[2] == std::numeric_limits<double>::denorm_min());
  CHECK(g.tensor("scalar").shape().empty());
  CHECK(g.tensor("empty").size() == 0);
  // Deterministic bytes.
  CHECK(serialize_model_file(f) == serialize_model_file(g));
  // No temporary files left next to the output.
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  CHECK(files == 1);
}

TEST_CASE("model file bytes do not change: golden header text and file checksum", "[train][model_file]") {
  // Written by the original hand-written JSON writer; any JSON library behind the model file must
  // reproduce these bytes exactly (the checksum covers the canonical header text).
  const std::string bytes = serialize_model_file(sample_file());
  const std::uint64_t n = header_length(bytes);
  CHECK(n == 608);
  CHECK(bytes.substr(8, n) ==
        "{\"__metadata__\":{\"checksum_crc32\":\"9d459521\",\"format\":\"flt-model\",\"format_version\":\"1\","
        "\"targets\":\"U0,gap\",\"title\":\"caf\xC3\xA9 \\\"quoted\\\"\\nline\",\"units\":\"eV,eV\"},"
        "\"counts\":{\"data_offsets\":[80,88],\"dtype\":\"I32\",\"shape\":[2]},"
        "\"elements\":{\"data_offsets\":[0,48],\"dtype\":\"I64\",\"shape\":[6]},"
        "\"empty\":{\"data_offsets\":[88,88],\"dtype\":\"F32\",\"shape\":[0,4]},"
        "\"encoder.0.weight\":{\"data_offsets\":[88,112],\"dtype\":\"F32\",\"shape\":[2,3]},"
        "\"mask\":{\"data_offsets\":[112,115],\"dtype\":\"U8\",\"shape\":[3,1]},"
        "\"reference_energies\":{\"data_offsets\":[48,72],\"dtype\":\"F64\",\"shape\":[3]},"
        "\"scalar\":{\"data_offsets\":[72,80],\"dtype\":\"F64\",\"shape\":[]}}     ");
  CHECK(bytes.size() == 731);
  CHECK(hex32(crc32(bytes)) == "821dac30");
}

TEST_CASE("model file layout follows the safetensors rules", "[train][model_file]") {
  const std::string bytes = serialize_model_file(sample_file());
  const std::uint64_t n = header_length(bytes);
  CHECK((8 + n) % 8 == 0);  // data starts 8-byte aligned; header padded with spaces
  CHECK(bytes[8] == '{');
  const json header = parse_json(std::string_view(bytes).substr(8, n));
  const json& meta = header.at("__metadata__");
  CHECK(meta.at("format") == "flt-model");
  CHECK(meta.at("format_version") == "1");
  // Offsets are relative to the data start, contiguous from 0 and cover the buffer exactly.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const json& off = info.at("data_offsets");
    spans.emplace_back(off[0].get<std::uint64_t>(), off[1].get<std::uint64_t>());
    // Every tensor naturally aligned (elements never straddle their size).
    const auto dtype = parse_dtype(info.at("dtype").get<std::string>());
    CHECK(off[0].get<std::uint64_t>() % dtype_size(*dtype) == 0);
  }
  std::sort(spans.begin(), spans.end());
  std::uint64_t pos = 0;
  for (const auto& [b, e] : spans) {
    CHECK(b == pos);
    pos = e;
  }
  CHECK(pos == bytes.size() - 8 - n);
  // The checksum is CRC-32 of the canonical header without it, then the data (documented formula).
  json stripped = header;
  stripped["__metadata__"].erase("checksum_crc32");
  std::uint32_t crc = crc32(dump_json(stripped));
  crc = crc32_update(crc, bytes.data() + 8 + n, bytes.size() - 8 - n);
  CHECK(meta.at("checksum_crc32").get<std::string>() == hex32(crc));
  // Little-endian F32 values at their offsets.
  const json& w = header.at("encoder.0.weight").at("data_offsets");
  float first = 0;
  std::memcpy(&first, bytes.data() + 8 + n + w[0].get<std::uint64_t>(), 4);
  CHECK(first == 1.5f);
}

TEST_CASE("model file reader rejects each kind of malformed header with a reason", "[train][model_file]") {
  const std::string data(16, '\0');  // room for one F32 [4] or F64 [2]
  auto with = [&](const char* name, json info, json h = base_header()) {
    h[name] = std::move(info);
    return h;
  };
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {4}, 0, 16), base_header("2")), data)),
             Catch::Contains("unsupported format version '2'"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F16", {8}, 0, 16)), data)), Catch::Contains("unsupported dtype"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {5}, 0, 16)), data)), Catch::Contains("needs 20"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {4}, 0, 20)), data + "1234")), Catch::Contains("needs 16"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {4}, 0, 16)), data + "x")), Catch::Contains("trailing bytes"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {4}, 4, 20)), data + "1234")), Catch::Contains("gap"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {4}, 0, 16)), "short")), Catch::Contains("truncated"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {1ULL << 62, 1ULL << 62}, 0, 16)), data)),
             Catch::Contains("overflows"));
  CHECK_THAT(expect_error(craft(with("w", tensor_info("F32", {4}, 16, 0)), data)), Catch::Contains("end before begin"));
  {
    json h = with("a", tensor_info("F32", {4}, 0, 16));
    h["b"] = tensor_info("F32", {2}, 8, 16);
    CHECK_THAT(expect_error(craft(h, data)), Catch::Contains("overlaps"));
  }
  {
    json info = tensor_info("F32", {4}, 0, 16);
    info["extra"] = 1;
    CHECK_THAT(expect_error(craft(with("w", info), data)), Catch::Contains("unknown field 'extra'"));
  }
  {
    json info = tensor_info("F32", {4}, 0, 16);
    for (const json& bad : {json(-4.0), json(4.0), json(-4), json("4"), json(nullptr)}) {
      info["shape"] = json::array({bad});
      CHECK_THAT(expect_error(craft(with("w", info), data)),
                 Catch::Contains("shape entries must be non-negative integers"));
    }
    info = tensor_info("F32", {4}, 0, 16);
    info["data_offsets"] = {0.0, 16};
    CHECK_THAT(expect_error(craft(with("w", info), data)),
               Catch::Contains("data_offsets must be non-negative integers"));
  }
  {
    json h = base_header();
    h["__metadata__"]["format"] = "gguf";
    CHECK_THAT(expect_error(craft(h, "")), Catch::Contains("unknown format"));
    h["__metadata__"]["format"] = "flt-model";
    h["__metadata__"]["count"] = 3;
    CHECK_THAT(expect_error(craft(h, "")), Catch::Contains("is not a string"));
  }
  {
    json h = json::object();
    h["w"] = tensor_info("F32", {4}, 0, 16);
    std::string text = dump_json(h);  // a plain safetensors file without flt metadata
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
    CHECK_THAT(expect_error(bytes + text + data), Catch::Contains("no __metadata__"));
  }
  // Strict JSON: duplicate keys and deep nesting are rejected before anything else.
  auto with_header_text = [](const std::string& text) {
    std::string out;
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
    return out + text;
  };
  CHECK_THAT(expect_error(with_header_text("{\"a\":1,\"a\":2}")),
             Catch::Contains("not valid JSON") && Catch::Contains("duplicate key \"a\""));
  CHECK_THAT(expect_error(with_header_text("{\"a\":" + std::string(16, '[') + std::string(16, ']') + "}")),
             Catch::Contains("not valid JSON") && Catch::Contains("nesting deeper than 16"));
  // Not JSON at all, a header length beyond the file, a huge header length, a tiny file.
  CHECK_THAT(expect_error(std::string("\x05\0\0\0\0\0\0\0{abc}", 13)), Catch::Contains("not valid JSON"));
  CHECK_THAT(expect_error(std::string("\xff\0\0\0\0\0\0\0{}", 10)), Catch::Contains("truncated"));
  CHECK_THAT(expect_error(std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10)), Catch::Contains("exceeds the limit"));
  CHECK_THAT(expect_error("abc"), Catch::Contains("too short"));
  // A valid file of another kind.
  ModelFile ck("flt-checkpoint");
  CHECK_THROWS_AS(parse_model_file(serialize_model_file(ck), "x.flt", "flt-model"), ModelFileError);
  CHECK_NOTHROW(parse_model_file(serialize_model_file(ck), "x.flt", "flt-checkpoint"));
  // A valid crafted file is accepted, so the failures above are each due to their one defect.
  CHECK_NOTHROW(parse_model_file(craft(with("w", tensor_info("F32", {4}, 0, 16)), data), "ok.flt"));
}

TEST_CASE("model file API errors name the file and the tensor", "[train][model_file]") {
  const ModelFile f = parse_model_file(serialize_model_file(sample_file()), "m.flt");
  CHECK_THROWS_WITH(f.tensor("nope"), Catch::Contains("m.flt") && Catch::Contains("missing tensor 'nope'"));
  CHECK_THROWS_WITH(f.values<double>("encoder.0.weight"), Catch::Contains("has dtype F32, expected F64"));
  CHECK_THROWS_WITH(f.values<float>("encoder.0.weight", Shape{3, 2}), Catch::Contains("has shape [2,3], expected [3,2]"));
  CHECK_THROWS_WITH(f.metadata("nope"), Catch::Contains("missing metadata entry 'nope'"));
  ModelFile g;
  CHECK_THROWS_AS(g.set_metadata("format", "x"), flt::InvalidArgument);
  CHECK_THROWS_AS(g.set_metadata("checksum_crc32", "x"), flt::InvalidArgument);
  CHECK_THROWS_AS(g.set_tensor("__metadata__", Tensor()), flt::InvalidArgument);
  CHECK_THROWS_AS(Tensor(std::vector<float>{1, 2, 3}, Shape{2, 2}), flt::InvalidArgument);
  CHECK_THROWS_AS(ModelFile("model"), flt::InvalidArgument);
  CHECK_THROWS_AS(read_model_file("/nonexistent/dir/m.flt"), flt::IoError);
  CHECK_THROWS_AS(write_model_file("/nonexistent/dir/m.flt", g), flt::IoError);
}

TEST_CASE("corrupted model files either load identical data or throw ModelFileError", "[train][model_file][robustness]") {
  const ModelFile original = sample_file();
  const std::string good = serialize_model_file(original);
  flt::Rng rng(20261127);
  std::size_t rejected = 0, identical = 0;
  auto check = [&](const std::string& bytes) {
    try {
      const ModelFile f = parse_model_file(bytes, "corrupt.flt");
      CHECK(f == original);  // anything accepted must be the original content
      ++identical;
    } catch (const ModelFileError&) {
      ++rejected;
    }
    flt_fuzz_model_file(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  };
  // Every truncation length.
  for (std::size_t len = 0; len < good.size(); ++len) check(good.substr(0, len));
  // A single bit flip at every byte position (a random bit each time).
  for (std::size_t pos = 0; pos < good.size(); ++pos) {
    std::string bad = good;
    bad[pos] = static_cast<char>(bad[pos] ^ (1 << rng.below(8)));
    check(bad);
  }
  // Random garbling: 1-8 random bytes overwritten, bytes inserted or deleted.
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bad = good;
    const auto kind = rng.below(3);
    const int count = 1 + static_cast<int>(rng.below(8));
    for (int k = 0; k < count; ++k) {
      const std::size_t pos = rng.below(bad.size());
      if (kind == 0) bad[pos] = static_cast<char>(rng.below(256));
      else if (kind == 1) bad.insert(pos, 1, static_cast<char>(rng.below(256)));
      else if (bad.size() > 1) bad.erase(pos, 1);
    }
    check(bad);
  }
  // Appended data.
  check(good + "extra");
  INFO("identical " << identical << ", rejected " << rejected);
  CHECK(rejected > good.size() * 2 - 10);  // nearly every mutation detected (CRC-32 catches all single flips)
}

TEST_CASE("fuzz entry points survive arbitrary bytes", "[train][fuzz]") {
  flt::Rng rng(7);
  const std::string seeds[] = {serialize_model_file(sample_file()), "{\"a\":[1,2,{\"b\":null}]}",
                               "[s]\nk = v\n# c\nq = \"x\\ty\"\n", "a,b\n\"1,2\",3\r\n,\n"};
  for (const auto& seed : seeds)
    for (int trial = 0; trial < 300; ++trial) {
      std::string s = seed;
      for (int k = 0; k < 3; ++k) s[rng.below(s.size())] = static_cast<char>(rng.below(256));
      const auto* d = reinterpret_cast<const std::uint8_t*>(s.data());
      CHECK(flt_fuzz_model_file(d, s.size()) == 0);
      CHECK(flt_fuzz_json(d, s.size()) == 0);
      CHECK(flt_fuzz_ini(d, s.size()) == 0);
      CHECK(flt_fuzz_csv(d, s.size()) == 0);
    }
}
