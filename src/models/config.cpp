// ModelConfig validation and its key/value (INI) form. See molecule_model.hpp.
#include "models/molecule_model.hpp"

#include "core/text.hpp"
#include "models/config_values.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <set>

namespace flt::models {

const char* to_string(AttentionKind kind) noexcept {
  switch (kind) {
    case AttentionKind::kronecker: return "kronecker";
    case AttentionKind::bias: return "bias";
    case AttentionKind::performer: return "performer";
    case AttentionKind::exact: return "exact";
    case AttentionKind::near_far: return "near_far";
  }
  return "?";
}

const char* to_string(FarField far) noexcept {
  switch (far) {
    case FarField::flt: return "flt";
    case FarField::exact: return "exact";
    case FarField::none: return "none";
  }
  return "?";
}

FarField far_field_from_string(const std::string& name) {
  if (name == "flt") return FarField::flt;
  if (name == "exact") return FarField::exact;
  if (name == "none") return FarField::none;
  throw ConfigError("model: unknown far_field '" + name + "' (flt, exact, none)");
}

const char* to_string(ChargeEnergy charge) noexcept {
  switch (charge) {
    case ChargeEnergy::none: return "none";
    case ChargeEnergy::flt: return "flt";
    case ChargeEnergy::exact: return "exact";
  }
  return "?";
}

ChargeEnergy charge_energy_from_string(const std::string& name) {
  if (name == "none") return ChargeEnergy::none;
  if (name == "flt") return ChargeEnergy::flt;
  if (name == "exact") return ChargeEnergy::exact;
  throw ConfigError("model: unknown charge_energy '" + name + "' (none, flt, exact)");
}

const char* to_string(ChargeNeutral neutral) noexcept {
  switch (neutral) {
    case ChargeNeutral::structure: return "structure";
    case ChargeNeutral::fragment: return "fragment";
  }
  return "?";
}

ChargeNeutral charge_neutral_from_string(const std::string& name) {
  for (auto k : {ChargeNeutral::structure, ChargeNeutral::fragment})
    if (name == to_string(k)) return k;
  throw ConfigError("model: unknown charge_neutral '" + name + "' (structure, fragment)");
}

AttentionKind attention_kind_from_string(const std::string& name) {
  if (name == "kronecker") return AttentionKind::kronecker;
  if (name == "bias") return AttentionKind::bias;
  if (name == "performer") return AttentionKind::performer;
  if (name == "exact") return AttentionKind::exact;
  if (name == "near_far") return AttentionKind::near_far;
  throw ConfigError("model: unknown attention '" + name +
                    "' (near_far, kronecker, bias, performer, exact)");
}

std::string target_name_problem(std::string_view name) {
  const auto at = name.find_first_of(",= \t\n");
  if (at == std::string_view::npos) return {};
  switch (name[at]) {
    case ' ': return "holds a blank";
    case '\t': return "holds a tab";
    case '\n': return "holds a line break";
    default: return "holds '" + std::string(1, name[at]) + "'";
  }
}

void ModelConfig::validate() const {
  auto fail = [](const std::string& key, const std::string& why) {
    throw ConfigError("model configuration: " + key + ": " + why);
  };
  if (targets.empty()) fail("targets", "at least one target is required");
  std::set<std::string> names;
  for (const auto& t : targets) {
    if (t.name.empty()) fail("targets", "empty target name");
    if (const std::string why = target_name_problem(t.name); !why.empty())
      fail("targets", "target name '" + t.name + "' " + why);
    if (t.unit.find_first_of(",\n") != std::string::npos)
      fail("target_units", "unit '" + t.unit + "' contains a separator");
    if (!names.insert(t.name).second) fail("targets", "duplicate target '" + t.name + "'");
  }
  if (width <= 0) fail("width", "must be positive");
  if (heads <= 0) fail("heads", "must be positive");
  if (width % heads != 0) fail("width", "must be divisible by heads");
  if (blocks < 0) fail("blocks", "must be >= 0");
  if (mlp_hidden <= 0) fail("mlp_hidden", "must be positive");
  if (head_hidden <= 0) fail("head_hidden", "must be positive");
  if (max_z < 1 || max_z > 118) fail("max_z", "must be in [1, 118]");
  if (max_charge < 0 || max_charge > 8) fail("max_charge", "must be in [0, 8]");
  if (num_features <= 0) fail("num_features", "must be positive");
  if (num_frequencies <= 0) fail("num_frequencies", "must be positive");
  if (spectrum == attn::SpectrumKind::local_window || spectrum == attn::SpectrumKind::gaussian_mixture)
    fail("spectrum", "molecules need a rotation-invariant spectrum (radial_gaussian, radial_shells)");
  if (spectrum_components <= 0) fail("spectrum_components", "must be positive");
  if (!(proposal_scale > 0) || !std::isfinite(proposal_scale)) fail("proposal_scale", "must be > 0");
  if (!(init_sigma_min > 0) || !(init_sigma_max >= init_sigma_min) || !std::isfinite(init_sigma_max))
    fail("init_sigma_min", "need 0 < init_sigma_min <= init_sigma_max");
  if (!std::isfinite(init_beta)) fail("init_beta", "must be finite");
  if (exact_rbf < 2) fail("exact_rbf", "must be >= 2");
  if (!(cutoff > 0) || !std::isfinite(cutoff)) fail("cutoff", "must be > 0");
  if (radial_nodes < 1) fail("radial_nodes", "must be >= 1");
  if (far_nodes < 1) fail("far_nodes", "must be >= 1");
  if (!(far_spacing > 0) || !std::isfinite(far_spacing)) fail("far_spacing", "must be > 0");
  if (far_degree < 1 || far_degree > 200) fail("far_degree", "must be in [1, 200]");
  if (far_directions < 1) fail("far_directions", "must be >= 1");
  if (!(far_init > 0) || !std::isfinite(far_init)) fail("far_init", "must be > 0");
  if (!(kronecker_floor > 0) || !(kronecker_floor < 1)) fail("kronecker_floor", "must be in (0, 1)");
  if (charge_nodes < 1) fail("charge_nodes", "must be >= 1");
  if (!(charge_spacing > 0) || !std::isfinite(charge_spacing)) fail("charge_spacing", "must be > 0");
  if (charge_degree < 1 || charge_degree > 200) fail("charge_degree", "must be in [1, 200]");
  if (!(charge_init > 0) || !std::isfinite(charge_init)) fail("charge_init", "must be > 0");
  if (charge_energy == ChargeEnergy::none && charge_formal) fail("charge_formal", "needs a charge_energy");
  if (charge_energy == ChargeEnergy::none && charge_coulomb) fail("charge_coulomb", "needs a charge_energy");
  if (charge_energy == ChargeEnergy::none && charge_neutral != ChargeNeutral::structure)
    fail("charge_neutral", "needs a charge_energy");
  if (!(charge_bond_scale > 0 && charge_bond_scale <= 3)) fail("charge_bond_scale", "must be in (0, 3]");
  if (!(three_body_cutoff > 0) || !std::isfinite(three_body_cutoff)) fail("three_body_cutoff", "must be > 0");
  if (three_body_radial < 1 || three_body_radial > 32) fail("three_body_radial", "must be in [1, 32]");
  if (three_body_lmax < 0 || three_body_lmax > 12) fail("three_body_lmax", "must be in [0, 12]");
  if (three_body && std::none_of(targets.begin(), targets.end(), [](const TargetSpec& t) { return t.extensive; }))
    fail("three_body", "needs an extensive target (an energy summed over atoms)");
  if (charge_neutral == ChargeNeutral::fragment && max_z > 96)
    fail("max_z", "charge_neutral = fragment knows covalent radii up to Z = 96");
  if (charge_energy != ChargeEnergy::none) {
    // The charge energy is an energy: one extensive target that it adds to, and the near_far
    // model's neighbour list for the pairs inside the cutoff.
    if (attention != AttentionKind::near_far)
      fail("charge_energy", std::string("needs attention = near_far (this model's attention is ") +
                                to_string(attention) + ")");
    if (targets.size() != 1 || !targets.front().extensive)
      fail("charge_energy", "needs exactly one extensive (summed) target, an energy; set "
                            "charge_energy = none for other targets");
  }
  if (!(exact_cutoff > 0) || !std::isfinite(exact_cutoff)) fail("exact_cutoff", "must be > 0");
}

std::vector<KeyWithoutEffect> config_keys_without_effect(const ModelConfig& c) {
  std::vector<KeyWithoutEffect> out;
  auto add = [&out](std::initializer_list<const char*> keys, const char* why) {
    for (const char* key : keys) out.push_back({key, why});
  };
  const AttentionKind kind = c.attention;
  const bool near_far = kind == AttentionKind::near_far;
  const bool flt_kind = kind == AttentionKind::kronecker || kind == AttentionKind::bias;
  if (!near_far)
    add({"cutoff", "radial_nodes", "vectors", "far_field", "far_nodes", "far_spacing", "far_design", "far_degree",
         "far_directions", "far_init", "charge_energy", "charge_nodes", "charge_spacing", "charge_degree",
         "charge_init", "charge_formal", "charge_coulomb", "charge_neutral", "charge_bond_scale"},
        "only attention = near_far reads it");
  if (!flt_kind && kind != AttentionKind::performer)
    add({"num_features"}, "only the kronecker, bias and performer kinds read it");
  if (!flt_kind)
    add({"num_frequencies", "spectrum", "spectrum_components", "proposal", "proposal_scale", "init_sigma_min",
         "init_sigma_max"},
        "only the kronecker and bias kinds have the RPE's random features");
  if (kind != AttentionKind::bias) add({"init_beta"}, "only attention = bias reads it");
  if (kind != AttentionKind::kronecker) add({"kronecker_floor"}, "only attention = kronecker reads it");
  if (flt_kind && c.proposal != attn::ProposalKind::gaussian)
    add({"proposal_scale"}, "only with proposal = gaussian");
  if (kind != AttentionKind::exact) add({"exact_rbf", "exact_cutoff"}, "only attention = exact reads it");
  if (kind == AttentionKind::exact) add({"redraw_features"}, "exact attention has no random features");
  if (near_far) {
    // Only the FLT far field draws anything at random (its rotated design); the charge energy's
    // product grid is fixed.
    if (c.far_field != FarField::flt) add({"redraw_features"}, "only with far_field = flt");
    if (c.far_field == FarField::none)
      add({"far_nodes", "far_spacing", "far_design", "far_degree", "far_directions", "far_init"},
          "far_field = none");
    else if (c.far_field == FarField::exact)
      add({"far_design", "far_degree", "far_directions"}, "the exact far field needs no design: only with far_field = flt");
    else if (c.far_design == attn::DesignKind::iid)
      add({"far_degree"}, "only with far_design = product_grid");
    else
      add({"far_directions"}, "only with far_design = iid");
    if (c.charge_energy == ChargeEnergy::none) {
      add({"charge_nodes", "charge_spacing", "charge_degree", "charge_init", "charge_formal", "charge_coulomb",
           "charge_neutral", "charge_bond_scale"},
          "only with a charge_energy");
    } else {
      if (c.charge_energy == ChargeEnergy::exact) add({"charge_degree"}, "only with charge_energy = flt");
      if (c.charge_coulomb) add({"charge_init"}, "charge_coulomb starts the charge mask at Coulomb's law");
      if (c.charge_neutral != ChargeNeutral::fragment)
        add({"charge_bond_scale"}, "only with charge_neutral = fragment");
    }
  }
  if (!c.three_body)
    add({"three_body_cutoff", "three_body_radial", "three_body_lmax"}, "only with three_body = true");
  if (!c.use_charges) add({"max_charge"}, "only with use_charges = true");
  return out;
}

namespace {

// Comma-separated, each item trimmed (inner blanks kept: "cal/(mol K)"), empty items kept.
std::vector<std::string> trimmed_fields(const std::string& s) {
  std::vector<std::string> out = split(s);
  for (auto& item : out) item = std::string(trim(item));
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> config_to_strings(const ModelConfig& c) {
  std::string names, units, pooling;
  for (std::size_t i = 0; i < c.targets.size(); ++i) {
    const char* sep = i ? "," : "";
    names += sep + c.targets[i].name;
    units += sep + c.targets[i].unit;
    pooling += std::string(sep) + (c.targets[i].extensive ? "sum" : "mean");
  }
  return {
      {"targets", names},
      {"target_units", units},
      {"target_pooling", pooling},
      {"width", std::to_string(c.width)},
      {"heads", std::to_string(c.heads)},
      {"blocks", std::to_string(c.blocks)},
      {"mlp_hidden", std::to_string(c.mlp_hidden)},
      {"head_hidden", std::to_string(c.head_hidden)},
      {"activation", to_string(c.activation)},
      {"max_z", std::to_string(c.max_z)},
      {"use_charges", c.use_charges ? "true" : "false"},
      {"max_charge", std::to_string(c.max_charge)},
      {"attention", to_string(c.attention)},
      {"cutoff", shortest_number(c.cutoff)},
      {"radial_nodes", std::to_string(c.radial_nodes)},
      {"vectors", c.vectors ? "true" : "false"},
      {"far_field", to_string(c.far_field)},
      {"far_nodes", std::to_string(c.far_nodes)},
      {"far_spacing", shortest_number(c.far_spacing)},
      {"far_design", attn::to_string(c.far_design)},
      {"far_degree", std::to_string(c.far_degree)},
      {"far_directions", std::to_string(c.far_directions)},
      {"far_init", shortest_number(c.far_init)},
      {"charge_energy", to_string(c.charge_energy)},
      {"charge_nodes", std::to_string(c.charge_nodes)},
      {"charge_spacing", shortest_number(c.charge_spacing)},
      {"charge_degree", std::to_string(c.charge_degree)},
      {"charge_init", shortest_number(c.charge_init)},
      {"charge_formal", c.charge_formal ? "true" : "false"},
      {"charge_coulomb", c.charge_coulomb ? "true" : "false"},
      {"charge_neutral", to_string(c.charge_neutral)},
      {"charge_bond_scale", shortest_number(c.charge_bond_scale)},
      {"three_body", c.three_body ? "true" : "false"},
      {"three_body_cutoff", shortest_number(c.three_body_cutoff)},
      {"three_body_radial", std::to_string(c.three_body_radial)},
      {"three_body_lmax", std::to_string(c.three_body_lmax)},
      {"num_features", std::to_string(c.num_features)},
      {"num_frequencies", std::to_string(c.num_frequencies)},
      {"spectrum", attn::to_string(c.spectrum)},
      {"spectrum_components", std::to_string(c.spectrum_components)},
      {"proposal", attn::to_string(c.proposal)},
      {"proposal_scale", shortest_number(c.proposal_scale)},
      {"init_sigma_min", shortest_number(c.init_sigma_min)},
      {"init_sigma_max", shortest_number(c.init_sigma_max)},
      {"init_beta", shortest_number(c.init_beta)},
      {"kronecker_floor", shortest_number(c.kronecker_floor)},
      {"redraw_features", c.redraw_features ? "true" : "false"},
      {"exact_rbf", std::to_string(c.exact_rbf)},
      {"exact_cutoff", shortest_number(c.exact_cutoff)},
      {"seed", std::to_string(c.seed)},
  };
}

ModelConfig config_from_strings(const std::map<std::string, std::string>& given) {
  const ConfigReader in("model configuration", given);
  const auto& values = in.values();
  ModelConfig c;
  auto get = [&](const char* key) -> const std::string* {
    auto it = values.find(key);
    return it == values.end() ? nullptr : &it->second;
  };
  // Targets: names first, then units and pooling aligned with them.
  if (const auto* v = get("targets")) {
    c.targets.clear();
    for (const auto& n : trimmed_fields(*v)) c.targets.push_back({n, "", true});
  }
  if (const auto* v = get("target_units")) {
    const auto u = trimmed_fields(*v);
    if (u.size() != c.targets.size())
      in.fail("target_units: need one unit per target");
    for (std::size_t i = 0; i < u.size(); ++i) c.targets[i].unit = u[i];
  }
  if (const auto* v = get("target_pooling")) {
    const auto p = trimmed_fields(*v);
    if (p.size() != c.targets.size())
      in.fail("target_pooling: need one of sum/mean per target");
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (p[i] != "sum" && p[i] != "mean")
        in.fail("target_pooling: '" + p[i] + "' (sum, mean)");
      c.targets[i].extensive = p[i] == "sum";
    }
  }
  static const std::set<std::string> known = {
      "targets", "target_units", "target_pooling", "width", "heads", "blocks", "mlp_hidden",
      "head_hidden", "activation", "max_z", "use_charges", "max_charge", "attention",
      "num_features", "num_frequencies", "spectrum", "spectrum_components", "proposal_scale",
      "init_sigma_min", "init_sigma_max", "init_beta", "redraw_features", "exact_rbf",
      "exact_cutoff", "seed", "cutoff", "radial_nodes", "vectors", "far_field", "far_nodes",
      "far_spacing", "far_design", "far_degree", "far_directions", "far_init", "proposal",
      "kronecker_floor", "charge_energy", "charge_nodes", "charge_spacing", "charge_degree",
      "charge_init", "charge_formal", "charge_coulomb", "charge_neutral", "charge_bond_scale",
      "three_body", "three_body_cutoff", "three_body_radial", "three_body_lmax"};
  for (const auto& [key, v] : values) {
    if (!known.contains(key)) in.fail("unknown key '" + key + "'");
    if (key == "width") c.width = in.index(key, v);
    else if (key == "heads") c.heads = in.index(key, v);
    else if (key == "blocks") c.blocks = in.index(key, v);
    else if (key == "mlp_hidden") c.mlp_hidden = in.index(key, v);
    else if (key == "head_hidden") c.head_hidden = in.index(key, v);
    else if (key == "activation") c.activation = parse_activation(v);
    else if (key == "max_z") c.max_z = in.integer(key, v);
    else if (key == "use_charges") c.use_charges = in.boolean(key, v);
    else if (key == "max_charge") c.max_charge = in.integer(key, v);
    else if (key == "attention") c.attention = attention_kind_from_string(v);
    else if (key == "num_features") c.num_features = in.index(key, v);
    else if (key == "num_frequencies") c.num_frequencies = in.index(key, v);
    else if (key == "spectrum") c.spectrum = attn::spectrum_kind_from_string(v);
    else if (key == "spectrum_components") c.spectrum_components = in.index(key, v);
    else if (key == "proposal_scale") c.proposal_scale = in.number(key, v);
    else if (key == "init_sigma_min") c.init_sigma_min = in.number(key, v);
    else if (key == "init_sigma_max") c.init_sigma_max = in.number(key, v);
    else if (key == "init_beta") c.init_beta = in.number(key, v);
    else if (key == "redraw_features") c.redraw_features = in.boolean(key, v);
    else if (key == "exact_rbf") c.exact_rbf = in.index(key, v);
    else if (key == "exact_cutoff") c.exact_cutoff = in.number(key, v);
    else if (key == "seed") c.seed = in.unsigned_integer(key, v);
    else if (key == "cutoff") c.cutoff = in.number(key, v);
    else if (key == "radial_nodes") c.radial_nodes = in.index(key, v);
    else if (key == "vectors") c.vectors = in.boolean(key, v);
    else if (key == "far_field") c.far_field = far_field_from_string(v);
    else if (key == "far_nodes") c.far_nodes = in.index(key, v);
    else if (key == "far_spacing") c.far_spacing = in.number(key, v);
    else if (key == "far_design") c.far_design = attn::design_kind_from_string(v);
    else if (key == "far_degree") c.far_degree = in.index(key, v);
    else if (key == "far_directions") c.far_directions = in.index(key, v);
    else if (key == "far_init") c.far_init = in.number(key, v);
    else if (key == "proposal") c.proposal = attn::proposal_kind_from_string(v);
    else if (key == "kronecker_floor") c.kronecker_floor = in.number(key, v);
    else if (key == "charge_energy") c.charge_energy = charge_energy_from_string(v);
    else if (key == "charge_nodes") c.charge_nodes = in.index(key, v);
    else if (key == "charge_spacing") c.charge_spacing = in.number(key, v);
    else if (key == "charge_degree") c.charge_degree = in.index(key, v);
    else if (key == "charge_init") c.charge_init = in.number(key, v);
    else if (key == "charge_formal") c.charge_formal = in.boolean(key, v);
    else if (key == "charge_coulomb") c.charge_coulomb = in.boolean(key, v);
    else if (key == "charge_neutral") c.charge_neutral = charge_neutral_from_string(v);
    else if (key == "charge_bond_scale") c.charge_bond_scale = in.number(key, v);
    else if (key == "three_body") c.three_body = in.boolean(key, v);
    else if (key == "three_body_cutoff") c.three_body_cutoff = in.number(key, v);
    else if (key == "three_body_radial") c.three_body_radial = in.index(key, v);
    else if (key == "three_body_lmax") c.three_body_lmax = in.index(key, v);
  }
  c.validate();
  return c;
}

}  // namespace flt::models
