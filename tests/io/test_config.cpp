#include "../common/scratch_dir.hpp"
#include "io/ini.hpp"
#include "io/options.hpp"

#include <catch2/catch.hpp>

using namespace flt::io;
using flt::ConfigError;

namespace {

std::string value_of(const IniFile& ini, std::string_view section, std::string_view key) {
  const IniEntry* e = ini.find(section, key);
  return e ? e->value : "<absent>";
}

std::string ini_error(const std::string& text) {
  try {
    IniFile::parse(text, "bad.ini");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("INI reader: sections, comments, quotes, CRLF and the lines of its entries", "[train][ini]") {
  const std::string text =
      "\xEF\xBB\xBF# run configuration\r\n"
      "global = 1\r\n"
      "[train]\r\n"
      "  lr = 0.001  \r\n"
      "targets = U0, gap\n"
      "title = a # a comment from here\n"
      "padded = \"  spaced \\\"q\\\" \\\\ \\x23 \"\n"
      "empty =\n"
      "\n"
      "[data]\n"
      "path = /tmp/x.sdf\n"
      "[train]\n"
      "more = 2\n";
  const IniFile ini = IniFile::parse(text, "run.ini");
  REQUIRE(ini.sections().size() == 3);
  CHECK(value_of(ini, "", "global") == "1");
  CHECK(value_of(ini, "train", "lr") == "0.001");
  CHECK(value_of(ini, "train", "targets") == "U0, gap");
  CHECK(value_of(ini, "train", "title") == "a");
  CHECK(value_of(ini, "train", "padded") == "  spaced \"q\" \\ # ");
  CHECK(value_of(ini, "train", "empty").empty());
  CHECK(value_of(ini, "data", "path") == "/tmp/x.sdf");
  CHECK(value_of(ini, "train", "more") == "2");  // a repeated section continues the first
  CHECK(ini.find("train", "lr")->line == 4);
  CHECK(ini.find("data", "path")->line == 11);
  CHECK(ini.find("train", "more")->line == 13);
  // Before any section, "section.key" is the key of that section (Boost's reading).
  CHECK(value_of(IniFile::parse("train.lr = 3\n", "dotted.ini"), "train", "lr") == "3");
  // Round trip through dump(): the same entries, '#' and blanks kept by quoting.
  const IniFile again = IniFile::parse(ini.dump("written by a test\nsecond line"), "again.ini");
  CHECK(again.dump() == ini.dump());
  CHECK(value_of(again, "train", "padded") == "  spaced \"q\" \\ # ");
  CHECK(ini.dump("c").rfind("# c\n", 0) == 0);
  IniFile written;
  written.set("s", "k", "a#b\nc");
  CHECK(value_of(IniFile::parse(written.dump(), "w.ini"), "s", "k") == "a#b\nc");
  CHECK_THROWS_AS(written.set("s", "bad key", "x"), flt::InvalidArgument);
  CHECK_THROWS_AS(written.set("a.", "k", "x"), flt::InvalidArgument);
}

TEST_CASE("INI errors name file, line and key", "[train][ini]") {
  CHECK_THAT(ini_error("[a]\nkey value\n"), Catch::Contains("bad.ini:2:") && Catch::Contains("expected 'key = value'"));
  CHECK_THAT(ini_error("[a\n"), Catch::Contains("bad.ini:1:") && Catch::Contains("expected 'key = value'"));
  CHECK_THAT(ini_error("[a] x\n"), Catch::Contains("bad.ini:1:"));
  CHECK_THAT(ini_error("# c\nk y = 1\n"), Catch::Contains("bad.ini:2:") && Catch::Contains("invalid key 'k y'"));
  CHECK_THAT(ini_error("= 1\n"), Catch::Contains("invalid key"));
  CHECK_THAT(ini_error("k = \"open\n"), Catch::Contains("bad.ini:1:") && Catch::Contains("key 'k'") && Catch::Contains("closing"));
  CHECK_THAT(ini_error("k = \"a # b\"\n"), Catch::Contains("\\x23"));
  CHECK_THAT(ini_error("k = \"a\\qb\"\n"), Catch::Contains("unknown escape"));
  CHECK_THAT(ini_error("k = \"a\\x2\"\n"), Catch::Contains("two hexadecimal digits"));
  CHECK_THAT(ini_error("[]\n"), Catch::Contains("empty section"));
  CHECK_THAT(ini_error(std::string("k = \xff\n")), Catch::Contains("UTF-8"));
  CHECK_THROWS_AS(IniFile::load("/nonexistent/flt/config.ini"), flt::IoError);
}

TEST_CASE("typed values: integers, reals, booleans and lists", "[train][ini]") {
  CHECK(parse_int_value(" +12 ", "w") == 12);
  CHECK_THROWS_WITH(parse_int_value("1.5", "cfg.ini:3: option 'epochs'"),
                    Catch::Contains("cfg.ini:3: option 'epochs'") && Catch::Contains("expected an integer, got '1.5'"));
  CHECK(parse_real_value("3e-3", "w") == 3e-3);
  CHECK_THROWS_WITH(parse_real_value("inf", "w"), Catch::Contains("finite"));
  CHECK(parse_bool_value("Yes", "w"));
  CHECK_FALSE(parse_bool_value("off", "w"));
  CHECK_THROWS_WITH(parse_bool_value("maybe", "w"), Catch::Contains("true or false"));
  CHECK(parse_list_value(" U0 , gap", "w") == std::vector<std::string>{"U0", "gap"});
  CHECK(parse_list_value("", "w").empty());
  CHECK_THROWS_WITH(parse_list_value("a,,b", "w"), Catch::Contains("empty item"));
}

namespace {

OptionSchema train_schema() {
  OptionSchema s;
  s.option("targets", "data", OptionType::list, "U0", "targets to learn");
  s.option("input", "data", OptionType::path, std::nullopt, "training data");
  s.option("epochs", "train", OptionType::integer, "100", "epochs");
  s.option("lr", "train", OptionType::real, "5e-4", "peak learning rate");
  s.option("batch-size", "train", OptionType::integer, "32", "molecules per batch");
  s.option("warmup-steps", "train", OptionType::integer, "-1", "warm-up steps");
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

// The error message of resolving `file_text` (as "f.ini") below `args`, or "no error".
std::string resolve_error(const OptionSchema& schema, const std::string& file_text, const std::vector<std::string>& args) {
  try {
    const IniFile file = IniFile::parse(file_text, "f.ini");
    (void)resolve_options(schema, &file, parse_command_line(schema, args).options);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
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
  CHECK(r.source("targets").kind == OptionSource::Kind::command_line);
  CHECK(r.get_string("schedule") == "cosine");
  CHECK(r.source("schedule").kind == OptionSource::Kind::default_value);
  CHECK(r.get_string("input") == "qm9.xyz");
  CHECK(r.source("input").where == "run.ini:2");
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

  SECTION("values that need quoting in the file survive the round trip") {
    const ResolvedOptions q = resolve_options(schema, &file, {{"note", " run #3 = \"best\" "}});
    const IniFile reread = IniFile::parse(q.to_ini().dump(), "q.ini");
    CHECK(resolve_options(schema, &reread, {}).get_string("note") == " run #3 = \"best\" ");
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
    CHECK(a.source("lr").where == (dir / "base.ini").string() + ":7");
    CHECK(a.get_string("config") == (dir / "base.ini").string());
    write_resolved_config(dir / "config.ini", a);
    const ResolvedOptions b = resolve_command_line(schema, {"--config", (dir / "config.ini").string()});
    CHECK(b.get_int("epochs") == 7);
    CHECK(b.get_list("targets") == a.get_list("targets"));
    CHECK(b.to_ini().dump() == a.to_ini().dump());
    CHECK_THROWS_AS(resolve_command_line(schema, {"--config", (dir / "missing.ini").string()}), flt::IoError);
  }
}

TEST_CASE("options: the command line forms", "[train][options]") {
  const OptionSchema schema = train_schema();
  using Options = std::vector<std::pair<std::string, std::string>>;
  CHECK(parse_command_line(schema, {"--epochs", "3", "--lr=0.1"}).options == Options{{"epochs", "3"}, {"lr", "0.1"}});
  // A value may start with '-' (a negative number).
  CHECK(parse_command_line(schema, {"--warmup-steps", "-1"}).options == Options{{"warmup-steps", "-1"}});
  // Booleans: --flag, --flag=VALUE, --no-flag; a switch never takes the next argument.
  const CommandLine sw = parse_command_line(schema, {"--swa", "in.sdf"});
  CHECK(sw.options == Options{{"swa", "true"}});
  CHECK(sw.positional == std::vector<std::string>{"in.sdf"});
  CHECK(parse_command_line(schema, {"--swa=false"}).options == Options{{"swa", "false"}});
  CHECK(parse_command_line(schema, {"--no-swa"}).options == Options{{"swa", "false"}});
  // "--" ends the options; "-" is an argument (standard input).
  CHECK(parse_command_line(schema, {"--", "--lr"}).positional == std::vector<std::string>{"--lr"});
  CHECK(parse_command_line(schema, {"-"}).positional == std::vector<std::string>{"-"});
  // A repeated list option appends, on the command line and in the file.
  CHECK(parse_command_line(schema, {"--targets", "U0,gap", "--targets", "homo"}).options == Options{{"targets", "U0,gap,homo"}});
  const IniFile lists = IniFile::parse("[data]\ninput = x\ntargets = U0\ntargets = gap, homo\n", "lists.ini");
  CHECK(resolve_options(schema, &lists, {}).get_list("targets") == std::vector<std::string>{"U0", "gap", "homo"});
  CHECK(resolve_options(schema, &lists, {{"targets", "lumo"}}).get_list("targets") == std::vector<std::string>{"lumo"});
  // An option whose value may be left out takes it only as --name=VALUE or from the next argument.
  OptionSchema s = train_schema();
  OptionSpec& forces = s.option("forces", "train", OptionType::string, std::nullopt, "forces of a target");
  forces.optional = true;
  forces.implicit_value = "";
  CHECK(parse_command_line(s, {"--forces"}).options == Options{{"forces", ""}});
  CHECK(parse_command_line(s, {"--forces", "U0"}).options == Options{{"forces", "U0"}});
  CHECK_THAT(s.help(), Catch::Contains("--forces [STRING]"));
}

TEST_CASE("options: errors name the option and where it was given", "[train][options]") {
  const OptionSchema schema = train_schema();
  // Unknown options, with a suggestion; abbreviations are not guessed.
  CHECK_THROWS_WITH(parse_command_line(schema, {"--epoch", "3"}),
                    Catch::Contains("command line: unknown option --epoch") && Catch::Contains("did you mean --epochs"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"--batch", "8"}),
                    Catch::Contains("unknown option --batch") && Catch::Contains("did you mean --batch-size"));
  CHECK_THROWS_WITH(parse_command_line(schema, {"-x"}), Catch::Contains("unknown option '-x'"));
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n[train]\nepochs = 2\nlearning-rate = 1\nresume = true\n", {}),
             Catch::Contains("f.ini:5: unknown option 'learning-rate' in [train]") &&
                 Catch::Contains("f.ini:6: unknown option 'resume'") && Catch::Contains("only allowed on the command line"));
  CHECK_THAT(resolve_error(schema, "[trian]\nepochs = 2\n", {}), Catch::Contains("f.ini:2: option 'epochs' belongs in [train]"));
  // Missing and bad values.
  CHECK_THROWS_WITH(parse_command_line(schema, {"--lr"}), Catch::Contains("command line") && Catch::Contains("'--lr' is missing"));
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n", {"--epochs", "many"}),
             Catch::Contains("command line: option 'epochs'") && Catch::Contains("expected an integer, got 'many'"));
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n[train]\n\nepochs = 2.5\n", {}),
             Catch::Contains("f.ini:5: option 'epochs'") && Catch::Contains("expected an integer"));
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n[train]\nlr = abc\n", {}), Catch::Contains("f.ini:4: option 'lr'"));
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n", {"--swa=maybe"}), Catch::Contains("option 'swa'") && Catch::Contains("true or false"));
  // Choices.
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n", {"--schedule", "linear"}),
             Catch::Contains("command line: option 'schedule'") && Catch::Contains("'linear' is not one of: cosine, plateau"));
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n[train]\nschedule = linear\n", {}),
             Catch::Contains("f.ini:4: option 'schedule'") && Catch::Contains("not one of"));
  // Required options.
  CHECK_THROWS_WITH(resolve_options(schema, nullptr, {}), Catch::Contains("missing required option(s): --input"));
  CHECK(resolve_error(schema, "", {"--input", "x"}) == "no error");
  // Repeated non-list options.
  CHECK_THROWS_WITH(parse_command_line(schema, {"--lr", "1", "--lr", "2"}), Catch::Contains("option --lr given more than once"));
  CHECK_THAT(resolve_error(schema, "[data]\ninput = x\n[train]\nlr = 1\nlr = 2\n", {}),
             Catch::Contains("f.ini:5: option 'lr' repeated (first at f.ini:4)"));
  // The schema refuses bad declarations.
  OptionSchema s2;
  CHECK_THROWS_AS(s2.option("n", "", OptionType::integer, "x", ""), flt::InvalidArgument);
  s2.option("n", "", OptionType::integer, "1", "");
  CHECK_THROWS_AS(s2.option("n", "", OptionType::integer, "1", ""), flt::InvalidArgument);
  CHECK_THROWS_AS(s2.option("no-cache", "", OptionType::boolean, "1", ""), flt::InvalidArgument);
  CHECK_THROWS_AS(s2.option("a.b", "", OptionType::integer, "1", ""), flt::InvalidArgument);
  CHECK_THAT(schema.help(), Catch::Contains("--batch-size INT") && Catch::Contains("[default: 32]") &&
                                Catch::Contains("(cosine|plateau)") && !Catch::Contains("[default: false]"));
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
  CHECK_THROWS_WITH(parse_command_line(schema, {"-o"}), Catch::Contains("is missing"));

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

TEST_CASE("options: a path's file name, the spelling of resume fingerprints", "[train][options]") {
  CHECK(flt::io::file_name_value("datasets/rmd17-ethanol/train.xyz") == "train.xyz");
  CHECK(flt::io::file_name_value("/data/runs/../qm9/train.xyz") == "train.xyz");
  CHECK(flt::io::file_name_value("./train.xyz") == "train.xyz");
  CHECK(flt::io::file_name_value("datasets/qm9/") == "qm9");  // a directory, written with its slash
  CHECK(flt::io::file_name_value("-") == "-");
  CHECK(flt::io::file_name_value("none") == "none");
  CHECK(flt::io::file_name_value("") == "");
}
