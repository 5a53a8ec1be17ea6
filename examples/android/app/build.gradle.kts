// Gradle (Android, Kotlin DSL): build the models with edgekit before the assets are merged and copy
// the .tflite files (and the manifest) into src/main/assets/models. Paste into app/build.gradle.kts.
//
//   ./gradlew assembleDebug                       # runs edgekitBuild -> edgekitCopyModels -> preBuild
//   ./gradlew assembleDebug -Pedgekit="python3 -m edgekit"
//
// edgekitBuild always runs: edgekit compares content hashes itself and returns in well under a second
// when nothing changed, leaving the files untouched, so the Copy task stays UP-TO-DATE. Two Gradle
// workers building the same model share edgekit's cache safely (file locks, atomic renames).

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "com.example.digits"
    compileSdk = 34
    defaultConfig {
        applicationId = "com.example.digits"
        minSdk = 24
        targetSdk = 34
    }
    // .tflite files must stay uncompressed so LiteRT can memory-map them from the APK
    androidResources { noCompress += "tflite" }
}

dependencies {
    implementation("com.google.ai.edge.litert:litert:1.0.1")
}

val edgekitCommand = providers.gradleProperty("edgekit").orElse("edgekit")
val edgekitConfig = rootProject.file("edgekit.toml")          // the config next to settings.gradle.kts
val edgekitOut = layout.buildDirectory.dir("edgekit/models")

val edgekitBuild by tasks.registering(Exec::class) {
    group = "edgekit"
    description = "Builds the models of edgekit.toml (cached and reproducible)."
    environment("CI", "true")                                   // plain progress lines in the Gradle log
    commandLine(
        edgekitCommand.get().split(" ") +
            listOf("build", "--config", edgekitConfig.path, "--output", edgekitOut.get().asFile.path,
                   "--target", "tflite")
    )
    inputs.file(edgekitConfig)
    outputs.dir(edgekitOut)
    outputs.upToDateWhen { false }                             // edgekit's own cache decides
}

val edgekitCopyModels by tasks.registering(Copy::class) {
    group = "edgekit"
    description = "Copies the .tflite models and edgekit-manifest.json into src/main/assets/models."
    dependsOn(edgekitBuild)
    from(edgekitOut) {
        include("*.tflite", "edgekit-manifest.json")
    }
    into(layout.projectDirectory.dir("src/main/assets/models"))
}

tasks.named("preBuild") { dependsOn(edgekitCopyModels) }
