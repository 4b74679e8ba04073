#pragma once
// `edgeforge adapters RUN [--against RUN2]`: the weight-space analyses of a run's adapters (FouRA
// brief §2.4 and Fig. 4, B.1; lora/analysis.h) per adapted layer, with the subspace similarity φ
// against a second run's adapters on the same layers. The base UNet is the one the run was
// trained against (its config's frozen record), so the amplification factor reads the right W0.
// Then the mean |ΔW| per UNet unit (Hollowed Net's layer-significance analysis, lora/hollow.h).
#include <filesystem>
#include <string>

namespace ef::lora {

struct AdapterReportJob {
  std::filesystem::path run;      // an adapter run (runs/<name>/ for its newest)
  std::filesystem::path against;  // optional second adapter run, for φ
  std::filesystem::path json;     // optional: also write the rows as JSON here
};

// Returns the report as a text table. InputError for runs without adapters or bases that differ.
std::string run_adapter_report(const AdapterReportJob& job);

}  // namespace ef::lora
