#include "../common/scratch_dir.hpp"
#include "io/ini.hpp"
#include "io/options.hpp"

#include <catch2/catch.hpp>

using namespace flt::io;
using flt::ConfigError;

TEST_CASE("INI parser reads sections, comments, quotes and CRLF", "[train][ini]") {
  const std::string text =
      "\xEF\xBB\xBF# run configuration\r\n"
      "global = 1\r\n"
      "[train]\r\n"
      "  lr = 0.001  \r\n"
      "; another comment\n"
      "targets = U0, gap\n"
      "title = a # not a comment\n"
      "padded = \"  spaced \\\"q\\\" \\\\ \"\n"
      "empty =\n"
      "\n"
      "[data]\n"
      "path = /tmp/x.sdf\n";
  const IniFile ini = IniFile::parse(text, "run.ini");
  REQUIRE(ini.sections().size() == 3);
  CHECK(ini.get_int("", "global") == 1);
  CHECK(ini.get_real("train", "lr") == 0.001);
  CHECK(ini.get_list("train", "targets") == std::vector<std::string>{"U0", "gap"});
  CHECK(ini.get_string("train", "title") == "a # not a comment");
  CHECK(ini.get_string("train", "padded") == "  spaced \"q\" \\ ");
  CHECK(ini.get_string("train", "empty").empty());
  CHECK(ini.get_string("data", "path") == "/tmp/x.sdf");
  CHECK(ini.find("train", "lr")->line == 4);
  CHECK(ini.get_int("train", "missing", 7) == 7);
  CHECK(ini.get_bool("train", "missing", true));
  // Round trip through dump().
  const IniFile again = IniFile::parse(ini.dump("written by a test\nsecond line"), "again.ini");
  CHECK(again.dump() == ini.dump());
  CHECK(again.get_string("train", "padded") == "  spaced \"q\" \\ ");
  CHECK(ini.dump("c").rfind("# c\n", 0) == 0);
}

TEST_CASE("INI errors name file, line and key", "[train][ini]") {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      IniFile::parse(text, "bad.ini");
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK_THAT(error_of("[a]\nkey value\n"), Catch::Contains("bad.ini:2:") && Catch::Contains("expected 'key = value'"));
  CHECK_THAT(error_of("[a\n"), Catch::Contains("bad.ini:1:") && Catch::Contains("without ']'"));
  CHECK_THAT(error_of("[a]\nk = 1\nk = 2\n"), Catch::Contains("bad.ini:3:") && Catch::Contains("first at line 2"));
  CHECK_THAT(error_of("[a]\n[b]\n[a]\n"), Catch::Contains("bad.ini:3:") && Catch::Contains("repeated"));
  CHECK_THAT(error_of("k y = 1\n"), Catch::Contains("invalid key"));
  CHECK_THAT(error_of("k = \"open\n"), Catch::Contains("unterminated"));
  CHECK_THAT(error_of("k = \"a\\qb\"\n"), Catch::Contains("unknown escape"));
  CHECK_THAT(error_of("[]\n"), Catch::Contains("empty section"));
  CHECK_THAT(error_of("[a] x\n"), Catch::Contains("text after"));
  CHECK_THAT(error_of(std::string("k = \xff\n")), Catch::Contains("UTF-8"));
  const IniFile ini = IniFile::parse("[train]\nlr = fast\nepochs = 1.5\nflag = maybe\n", "cfg.ini");
  CHECK_THROWS_WITH(ini.get_real("train", "lr"),
                    Catch::Contains("cfg.ini:2: key 'lr' in [train]") && Catch::Contains("'fast'"));
  CHECK_THROWS_WITH(ini.get_int("train", "epochs"), Catch::Contains("cfg.ini:3") && Catch::Contains("integer"));
  CHECK_THROWS_WITH(ini.get_bool("train", "flag"), Catch::Contains("cfg.ini:4"));
  CHECK_THROWS_WITH(ini.get_string("train", "nope"), Catch::Contains("missing key 'nope' in [train]"));
  CHECK_THROWS_WITH(ini.require_known({"train"}, "train", {"lr", "epochs"}),
                    Catch::Contains("cfg.ini:4: key 'flag' in [train]: unknown key"));
  CHECK(ini.unknown_keys("train", {"lr", "epochs", "flag"}).empty());
}

namespace {

OptionSchema train_schema() {
  OptionSchema s;
  s.option("targets", "data", OptionType::list, "U0", "targets to learn");
  s.option("input", "data", OptionType::path, std::nullopt, "training data");
  s.option("epochs", "train", OptionType::integer, "100", "epochs");
  s.option("lr", "train", OptionType::real, "5e-4", "peak learning rate");
  s.option("batch-size", "train", OptionType::integer, "32", "molecules per batch");
  s.option("schedule", "train", OptionType::string, "cosine", "learning-rate schedule").choices = {"cosine", "plateau"};
  s.option("swa", "train", OptionType::boolean, "false", "weight averaging");
  s.option("note", "train", OptionType::string, std::nullopt, "free text").optional = true;
  OptionSpec config;
  config.name = "config";
  config.type = OptionType::path;
  config.help = "INI file";
  config.optional = true;
  config.persist = false;
  s.add(config);
  s.option("resume", "", OptionType::boolean, "false", "continue a run").persist = false;
  return s;
}

}  // namespace

TEST_CASE("options: command line overrides the file, which overrides defaults", "[train][options]") {
  const OptionSchema schema = train_schema();
  const IniFile file = IniFile::parse("[data]\ninput = qm9.xyz\ntargets = U0,gap\n[train]\nepochs = 20\nlr = 0.01\n", "run.ini");
  const CommandLine cl = parse_command_line(
      schema, {"--lr", "0.002", "--batch-size=8", "--swa", "extra.sdf", "--targets", "homo", "--targets", "lumo", "--resume"});
  CHECK(cl.positional == std::vector<std::string>{"extra.sdf"});
  const ResolvedOptions r = resolve_options(schema, &file, cl.options);
  CHECK(r.get_real("lr") == 0.002);
  CHECK(r.source("lr").kind == OptionSource::Kind::command_line);
  CHECK(r.get_int("epochs") == 20);
  CHECK(r.source("epochs").where == "run.ini:5");
  CHECK(r.get_int("batch-size") == 8);
  CHECK(r.get_bool("swa"));
  CHECK(r.get_list("targets") == std::vector<std::string>{"homo", "lumo"});
  CHECK(r.get_string("schedule") == "cosine");
  CHECK(r.source("schedule").kind == OptionSource::Kind::default_value);
  CHECK(r.get_string("input") == "qm9.xyz");
  CHECK_FALSE(r.has("note"));
  CHECK(r.get_bool("resume"));
  CHECK_THROWS_AS(r.get_int("lr"), flt::InvalidArgument);   // wrong type
  CHECK_THROWS_AS(r.get_string("note"), ConfigError);       // unset

  SECTION("the resolved configuration written as INI reads back to the same values") {
    flt::test_support::ScratchDir dir("opt");
    const IniFile written = r.to_ini();
    written.save(dir / "config.ini", "flt train configuration");
    const IniFile reread = IniFile::load(dir / "config.ini");
    const ResolvedOptions again = resolve_options(schema, &reread, {});
    for (const auto& o : schema.options()) {
      if (!o.persist) {
        CHECK(reread.find(o.section, o.name) == nullptr);
        continue;
      }
      INFO(o.name);
      CHECK(again.has(o.name) == r.has(o.name));
      if (r.has(o.name)) CHECK(again.raw(o.name) == r.raw(o.name));
    }
    CHECK(again.get_list("targets") == std::vector<std::string>{"homo", "lumo"});
    CHECK(again.to_ini().dump() == written.dump());
  }

  SECTION("resolve_command_line: --config file plus overrides, and the written config reads back") {
    flt::test_support::ScratchDir dir("cl");
    file.save(dir / "base.ini");
    std::vector<std::string> positional;
    const ResolvedOptions a = resolve_command_line(
        schema, {"--config", (dir / "base.ini").string(), "in.sdf", "--epochs", "7"}, &positional);
    CHECK(positional == std::vector<std::string>{"in.sdf"});
    CHECK(a.get_int("epochs") == 7);
    CHECK(a.get_real("lr") == 0.01);
    CHECK(a.get_string("config") == (dir / "base.ini").string());
    write_resolved_config(dir / "config.ini", a);
    const ResolvedOptions b = resolve_command_line(schema, {"--config", (dir / "config.ini").string()});
    CHECK(b.get_int("epochs") == 7);
    CHECK(b.get_list("targets") == a.get_list("targets"));
    CHECK(b.to_ini().dump() == a.to_ini().dump());
    CHECK_THROWS_AS(resolve_command_line(schema, {"--config", (dir / "missing.ini").string()}), flt::IoError);
  }
}

TEST_CASE("options: clear errors for unknown, misplaced, mistyped and missing options", "[train][options]") {
  const OptionSchema schema = train_schema();
  CHECK_THROWS_WITH(parse_command_line(schema, {"--epoch", "3"}), Catch::Contains("did you mean --epochs"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"--lr"}), Catch::Contains("needs a value"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"--lr", "1", "--lr", "2"}), Catch::Contains("more than once"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"-x"}), Catch::Contains("unknown option '-x'"));
  CHECK(parse_command_line(schema, {"--no-swa"}).options.at(0).second == "false");
  CHECK(parse_command_line(schema, {"--", "--lr"}).positional == std::vector<std::string>{"--lr"});
  CHECK(parse_command_line(schema, {"-"}).positional == std::vector<std::string>{"-"});
  const IniFile with_input = IniFile::parse("[data]\ninput = x\n", "a.ini");
  CHECK_THROWS_WITH(resolve_options(schema, &with_input, {{"epochs", "many"}}),
                    Catch::Contains("command line: option 'epochs'") && Catch::Contains("integer"));
  CHECK_THROWS_WITH(resolve_options(schema, &with_input, {{"schedule", "linear"}}), Catch::Contains("not one of: cosine, plateau"));
  CHECK_THROWS_WITH(resolve_options(schema, nullptr, {}), Catch::Contains("missing required option(s): --input"));
  const IniFile unknown = IniFile::parse("[data]\ninput = x\n[train]\nepochs = 2\nlearning-rate = 1\nresume = true\n", "b.ini");
  CHECK_THROWS_WITH(resolve_options(schema, &unknown, {}),
                    Catch::Contains("b.ini:5: unknown option 'learning-rate'") &&
                        Catch::Contains("b.ini:6: unknown option 'resume'") && Catch::Contains("only allowed on the command line"));
  const IniFile misplaced = IniFile::parse("[train]\ninput = x\n", "c.ini");
  CHECK_THROWS_WITH(resolve_options(schema, &misplaced, {}), Catch::Contains("c.ini:2: option 'input' belongs in [data]"));
  const IniFile badvalue = IniFile::parse("[data]\ninput = x\n[train]\nlr = abc\n", "d.ini");
  CHECK_THROWS_WITH(resolve_options(schema, &badvalue, {}), Catch::Contains("d.ini:4: option 'lr'"));
  OptionSchema s2;
  CHECK_THROWS_AS(s2.option("n", "", OptionType::integer, "x", ""), flt::InvalidArgument);
  s2.option("n", "", OptionType::integer, "1", "");
  CHECK_THROWS_AS(s2.option("n", "", OptionType::integer, "1", ""), flt::InvalidArgument);
  CHECK_THROWS_AS(s2.option("no-cache", "", OptionType::boolean, "1", ""), flt::InvalidArgument);
  CHECK_THAT(schema.help(), Catch::Contains("--batch-size INT") && Catch::Contains("[default: 32]") &&
                                Catch::Contains("(cosine|plateau)"));
}

TEST_CASE("options: short flags and aliases are other spellings of one option", "[train][options]") {
  OptionSchema schema = train_schema();
  schema.option("out", "run", OptionType::path, std::nullopt, "run directory").optional = true;
  schema.option("threads", "train", OptionType::integer, "0", "threads");
  schema.add_spellings("out", 'o', {"output"});
  schema.add_spellings("threads", 'j');
  schema.add_spellings("swa", 's');

  const CommandLine cl = parse_command_line(schema, {"-o", "run1", "-j2", "-s", "in.sdf", "-"});
  REQUIRE(cl.options.size() == 3);
  CHECK(cl.options[0] == std::pair<std::string, std::string>{"out", "run1"});
  CHECK(cl.options[1] == std::pair<std::string, std::string>{"threads", "2"});
  CHECK(cl.options[2] == std::pair<std::string, std::string>{"swa", "true"});
  CHECK(cl.positional == std::vector<std::string>{"in.sdf", "-"});
  // The alias is reported under the option's name, and counts as the same option.
  CHECK(parse_command_line(schema, {"--output=run2"}).options.at(0) == std::pair<std::string, std::string>{"out", "run2"});
  CHECK_THROWS_WITH(parse_command_line(schema, {"--out", "a", "--output", "b"}), Catch::Contains("more than once"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"-o", "a", "--out", "b"}), Catch::Contains("more than once"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"-x"}), Catch::Contains("unknown option '-x'") && Catch::Contains("-s, -o, -j"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"-strue"}), Catch::Contains("takes no value"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"-o"}), Catch::Contains("needs a value"));

  // An INI file may use the alias as key; the resolved configuration writes the option's name.
  const IniFile file = IniFile::parse("[data]\ninput = x\n[run]\noutput = from-file\n", "a.ini");
  const ResolvedOptions r = resolve_options(schema, &file, {});
  CHECK(r.get_string("out") == "from-file");
  CHECK(r.get_string("output") == "from-file");
  CHECK(r.to_ini().find("run", "out") != nullptr);
  CHECK(r.to_ini().find("run", "output") == nullptr);

  // Help shows both spellings.
  CHECK_THAT(schema.help(), Catch::Contains("-o, --out PATH") && Catch::Contains("(also --output)") &&
                                Catch::Contains("-j, --threads INT"));
  // Clashes are refused.
  CHECK_THROWS_AS(schema.add_spellings("epochs", 'o'), flt::InvalidArgument);
  CHECK_THROWS_AS(schema.add_spellings("epochs", 'x', {"lr"}), flt::InvalidArgument);
  CHECK_THROWS_AS(schema.add_spellings("epochs", '1'), flt::InvalidArgument);
  CHECK_THROWS_AS(schema.add_spellings("nope", 'n'), flt::InvalidArgument);
  OptionSpec clash;
  clash.name = "output-dir";
  clash.aliases = {"output"};
  CHECK_THROWS_AS(schema.add(clash), flt::InvalidArgument);
  CHECK(schema.find("output-dir") == nullptr);
}
